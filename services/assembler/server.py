"""Assembler bootstrap."""

from __future__ import annotations

from scenecast.v1 import assembler_service_pb2

from services.assembler.config import AssemblerSettings
from services.assembler.servicer import AssemblerServicer
from services.common.server import Server, build_service, run

SERVICE_NAME = assembler_service_pb2.DESCRIPTOR.services_by_name["AssemblerService"].full_name


def build(settings: AssemblerSettings) -> Server:
    servicer = AssemblerServicer(settings)

    return build_service(settings, servicer, SERVICE_NAME)


def main() -> None:
    settings = AssemblerSettings()
    run("assembler", lambda: build(settings), settings)
