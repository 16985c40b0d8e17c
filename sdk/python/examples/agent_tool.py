"""An LLM agent loop with one tool, "run this in a computer", backed by Ohm.

The tool is what you copy: a JSON schema the model sees (in the
function-calling shape OpenAI, Anthropic, LangChain and the OpenAI Agents
SDK all take) and a function that runs the call in a real computer and
returns what the model should read next. The model here is a stub that
plays a fixed script, so the example runs anywhere; the tool calls are
real. Swap ``StubModel`` for your framework's model call.

    python3 examples/agent_tool.py          # OHM_URL/OHM_TOKEN for a remote daemon
"""

import json
import os

from ohm import Ohm, OhmError

# What the model is told about the tool.
RUN_TOOL = {
    "name": "run",
    "description": "Run a shell command in your own Linux computer (Debian, with a durable "
    "home directory /home/ohm) and get its stdout, stderr and exit code.",
    "parameters": {
        "type": "object",
        "properties": {
            "command": {"type": "string", "description": "The shell command, run with bash -lc."},
            "timeout_seconds": {"type": "number", "description": "Kill it after this long (default 120)."},
        },
        "required": ["command"],
    },
}

# What an agent's context can take of one command's output.
MAX_OUTPUT = 16 << 10


def make_run_tool(computer):
    """The tool function: arguments as the model sent them, a JSON string
    back. Failures come back to the model as text to act on, never as an
    exception that ends the loop: a non-zero exit code is a result."""

    def run(arguments: dict) -> str:
        try:
            r = computer.run(arguments["command"], timeout=arguments.get("timeout_seconds", 120))
        except OhmError as e:  # a bad command, an unreachable computer, ...
            return json.dumps({"error": str(e)})
        out = {"exit_code": r.exit_code, "stdout": r.stdout[-MAX_OUTPUT:], "stderr": r.stderr[-MAX_OUTPUT:]}
        if len(r.stdout) > MAX_OUTPUT or len(r.stderr) > MAX_OUTPUT:
            out["truncated"] = True
        return json.dumps(out)

    return run


class StubModel:
    """Stands in for an LLM: asks for a few commands, then answers using
    what they printed."""

    def __init__(self):
        self.script = [
            {"command": "mkdir -p /home/ohm/work && cd /home/ohm/work && printf '3\\n1\\n2\\n' > nums.txt && sort -n nums.txt"},
            {"command": "cat /home/ohm/work/missing.txt"},  # fails: the model sees the error
            {"command": "wc -l < /home/ohm/work/nums.txt"},
        ]

    def respond(self, messages):
        """One turn: either {"tool_call": {...}} or {"content": "..."}."""
        step = sum(1 for m in messages if m["role"] == "tool")
        if step < len(self.script):
            return {"tool_call": {"id": "call_%d" % step, "name": "run", "arguments": self.script[step]}}
        last = json.loads(messages[-1]["content"])
        return {"content": "The file has %s lines." % last["stdout"].strip()}


def agent_loop(model, tools, task, max_turns=10):
    """The loop every framework runs: call the model, run the tools it
    asks for, feed their results back, until it answers."""
    messages = [{"role": "user", "content": task}]
    for _ in range(max_turns):
        reply = model.respond(messages)
        if "content" in reply:
            return reply["content"], messages
        call = reply["tool_call"]
        messages.append({"role": "assistant", "tool_calls": [call]})
        result = tools[call["name"]](call["arguments"])
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
    raise RuntimeError("the agent did not finish in %d turns" % max_turns)


def main():
    ohm = Ohm()
    computer = ohm.computers.create(template=os.environ.get("OHM_EXAMPLE_TEMPLATE", "coding-agent"), disk_size_mb=2048)
    try:
        answer, transcript = agent_loop(StubModel(), {"run": make_run_tool(computer)}, "How many lines has nums.txt?")
        for m in transcript:
            if m["role"] == "tool":
                print("tool:", m["content"])
        print("answer:", answer)
    finally:
        computer.delete()


if __name__ == "__main__":
    main()
