"""The seed's lambda example: public functions `hello.world` and `hello.pojo`."""
