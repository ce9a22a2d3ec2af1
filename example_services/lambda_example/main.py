"""`uvicorn example_services.lambda_example.main:app --port 8085`"""

from pathlib import Path

from meshkit import create_app

app = create_app(config_dir=Path(__file__).parent, scan=["example_services.lambda_example.functions"])
