"""The seed's REST example: a web app that fetches a PoJo from the lambda example."""
