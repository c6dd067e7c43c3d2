"""Fake external APIs: real HTTP/websocket servers on 127.0.0.1 that speak the documented shapes."""
