"""HTTP/JSON front door to the gateway: the `/v1` API (and, later, the studio and the MCP server) over gRPC.

FastAPI rather than bare Starlette: the script is already a pydantic model (scenecast_cli.script), and FastAPI turns
models and routes into the OpenAPI 3.1 document that is served and committed, with Server-Sent Events and request
body caps built in. Starlette alone would mean writing and keeping that document by hand.
"""
