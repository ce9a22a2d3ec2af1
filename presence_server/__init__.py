"""The presence monitor, the mesh's control plane: `uvicorn presence_server.main:app --port 8080`."""
