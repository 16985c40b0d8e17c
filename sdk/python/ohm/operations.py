"""Which method covers each operation of the daemon's OpenAPI document.

A test holds this table to ``internal/api/openapi.json``: an operation the
daemon gains fails it until a method here covers it (and the async client
has the same method). Adding an operation is: a method on the class that
owns the resource (``Computer``, ``Process``, ``Files``, ...), its twin in
``aio.py``, and a line here.
"""

#: operationId -> "Class.method" of package ohm that calls it.
OPERATIONS = {
    "health": "Ohm.health",
    "metrics": "Ohm.metrics",
    "openapi": "Ohm.openapi",
    "createComputer": "Computers.create",
    "listComputers": "Computers.list",
    "getComputer": "Computers.get",
    "deleteComputer": "Computers.delete",
    "startComputer": "Computer.start",
    "stopComputer": "Computer.stop",
    "setComputer": "Computer.set",
    "exec": "Computer.run_stream",
    "execInteractive": "Computer.shell",
    "listProcesses": "Computer.processes",
    "getProcess": "Computer.process",
    "killProcess": "Process.kill",
    "attachProcess": "Process.attach",
    "getFile": "Files.read",
    "putFile": "Files.write",
    "statFile": "Files.stat",
    "listFiles": "Files.list",
    "checkpointComputer": "Computer.checkpoint",
    "listCheckpoints": "Computer.checkpoints",
    "deleteCheckpoint": "Computer.delete_checkpoint",
    "restoreComputer": "Computer.restore",
    "forkComputer": "Computer.fork",
    "resizeComputer": "Computer.resize",
    "exposePort": "Computer.expose",
    "listPorts": "Computer.ports",
    "unexposePort": "Computer.unexpose",
    "watchComputer": "Computer.watch",
}
