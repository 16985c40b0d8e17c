// An LLM agent loop with one tool, "run this in a computer", backed by Ohm.
//
// The tool is what you copy: a JSON schema the model sees (the
// function-calling shape the OpenAI and Anthropic APIs, the Vercel AI SDK
// and Mastra all take) and a function that runs the call in a real
// computer and returns what the model should read next. The model here is
// a stub that plays a fixed script, so the example runs anywhere; the tool
// calls are real. Swap StubModel for your framework's model call.
//
//   npx tsc -p . && node dist/examples/agent-tool.js   # OHM_URL/OHM_TOKEN for a remote daemon

import { Computer, Ohm, OhmError } from "../src/index.js";

/** What the model is told about the tool. */
export const runTool = {
  name: "run",
  description:
    "Run a shell command in your own Linux computer (Debian, with a durable home directory /home/ohm) and get its stdout, stderr and exit code.",
  parameters: {
    type: "object",
    properties: {
      command: { type: "string", description: "The shell command, run with bash -lc." },
      timeout_seconds: { type: "number", description: "Kill it after this long (default 120)." },
    },
    required: ["command"],
  },
} as const;

/** What an agent's context can take of one command's output. */
const MAX_OUTPUT = 16 << 10;

type Args = { command: string; timeout_seconds?: number };

/**
 * The tool function: arguments as the model sent them, a JSON string back.
 * Failures come back to the model as text to act on, never as an exception
 * that ends the loop: a non-zero exit code is a result.
 */
export function makeRunTool(computer: Computer): (args: Args) => Promise<string> {
  return async (args) => {
    try {
      const r = await computer.run(args.command, { timeout: args.timeout_seconds ?? 120 });
      const truncated = r.stdout.length > MAX_OUTPUT || r.stderr.length > MAX_OUTPUT;
      return JSON.stringify({ exit_code: r.exitCode, stdout: r.stdout.slice(-MAX_OUTPUT), stderr: r.stderr.slice(-MAX_OUTPUT), ...(truncated ? { truncated } : {}) });
    } catch (e) {
      if (e instanceof OhmError) return JSON.stringify({ error: e.message }); // a bad command, an unreachable computer, ...
      throw e;
    }
  };
}

type Message =
  | { role: "user"; content: string }
  | { role: "assistant"; toolCalls: ToolCall[] }
  | { role: "tool"; toolCallId: string; content: string };
type ToolCall = { id: string; name: string; arguments: Args };
type Reply = { toolCall: ToolCall } | { content: string };

/** Stands in for an LLM: asks for a few commands, then answers using what they printed. */
class StubModel {
  private readonly script: Args[] = [
    { command: "mkdir -p /home/ohm/work && cd /home/ohm/work && printf '3\\n1\\n2\\n' > nums.txt && sort -n nums.txt" },
    { command: "cat /home/ohm/work/missing.txt" }, // fails: the model sees the error
    { command: "wc -l < /home/ohm/work/nums.txt" },
  ];

  async respond(messages: Message[]): Promise<Reply> {
    const step = messages.filter((m) => m.role === "tool").length;
    if (step < this.script.length) return { toolCall: { id: `call_${step}`, name: "run", arguments: this.script[step] } };
    const last = messages[messages.length - 1] as { content: string };
    return { content: `The file has ${JSON.parse(last.content).stdout.trim()} lines.` };
  }
}

/** The loop every framework runs: call the model, run the tools it asks for, feed their results back, until it answers. */
export async function agentLoop(model: StubModel, tools: Record<string, (a: Args) => Promise<string>>, task: string, maxTurns = 10): Promise<{ answer: string; messages: Message[] }> {
  const messages: Message[] = [{ role: "user", content: task }];
  for (let i = 0; i < maxTurns; i++) {
    const reply = await model.respond(messages);
    if ("content" in reply) return { answer: reply.content, messages };
    const call = reply.toolCall;
    messages.push({ role: "assistant", toolCalls: [call] });
    messages.push({ role: "tool", toolCallId: call.id, content: await tools[call.name](call.arguments) });
  }
  throw new Error(`the agent did not finish in ${maxTurns} turns`);
}

async function main(): Promise<void> {
  const ohm = new Ohm();
  const computer = await ohm.computers.create({ template: process.env.OHM_EXAMPLE_TEMPLATE ?? "coding-agent", diskSizeMb: 2048 });
  try {
    const { answer, messages } = await agentLoop(new StubModel(), { run: makeRunTool(computer) }, "How many lines has nums.txt?");
    for (const m of messages) if (m.role === "tool") console.log("tool:", m.content);
    console.log("answer:", answer);
  } finally {
    await computer.delete();
    ohm.close();
  }
}

await main();
