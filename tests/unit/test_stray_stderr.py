"""A service's log is one JSON object a line, also when a library prints to stderr instead of logging."""

import json
import subprocess
import sys
import textwrap

# A real process: configure() as every service calls it, then what gRPC's aio server does when a call is cancelled
# before its handler started (it logs the exception, then prints the traceback), then a print cut into pieces.
_SERVICE = textwrap.dedent(
    """
    import asyncio, logging, sys, traceback
    from services.common import observability, redact
    from services.common.settings import ServiceSettings

    redact.register("sk-live-0123456789abcdef0123456789")
    observability.configure("assembler", "json", "info", 0, ServiceSettings())
    try:
        raise asyncio.CancelledError()
    except BaseException:
        logging.getLogger("grpc._cython.cygrpc").exception("Exception not handled by _handle_exceptions")
        traceback.print_exc()
    sys.stderr.write("half a ")
    sys.stderr.write("line\\n\\n")
    print("token=sk-live-0123456789abcdef0123456789", file=sys.stderr)
    """
)


def test_every_line_a_library_prints_to_stderr_becomes_a_json_record() -> None:
    result = subprocess.run([sys.executable, "-c", _SERVICE], capture_output=True, text=True, timeout=60, check=True)
    records = [json.loads(line) for line in result.stderr.splitlines()]
    logged, *printed = records
    assert logged["logger"] == "grpc._cython.cygrpc" and logged["level"] == "ERROR"
    assert "CancelledError" in logged["exception"]
    assert [(record["logger"], record["level"], record["service"]) for record in printed] == [
        ("stderr", "WARNING", "assembler")
    ] * 5
    traceback_lines = logged["exception"].splitlines()
    assert [record["message"] for record in printed[:3]] == traceback_lines
    assert printed[3]["message"] == "half a line"
    # Printed lines pass the same redacting filter as log records.
    assert "sk-live" not in result.stderr and printed[4]["message"] == "token=[REDACTED]"
