// Scripted session with the real `ollama` npm client (native /api routes), on Node's fetch.
//
// Calls: chat stream, chat, generate stream, generate, embed, legacy embeddings, chat with
// tools (turn 1: the model calls `weather`; turn 2: the tool result goes back), a thinking chat
// stream, and a chat stream the client aborts after its first chunk.
// Prints one JSON line per call: driver, call, route, model, stream, chunks, input_tokens,
// output_tokens, finish_reason, tool_calls, aborted, error. Exit status 1 if a call failed.
//
//   node native_session.mjs --base-url http://127.0.0.1:11434 [--model llama3.2]

import { Ollama } from "ollama";

const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : dflt;
};
const host = opt("--base-url", process.env.STANDIN_URL ?? "http://127.0.0.1:11434");
const model = opt("--model", "llama3.2");
const client = new Ollama({ host });
let failed = false;

async function call(name, route, callModel, stream, body) {
  const rec = { driver: "node", call: name, route, model: callModel, stream, chunks: 0, error: null };
  try {
    await body(rec);
  } catch (e) {
    if (!rec.aborted) {
      rec.error = String(e?.message ?? e);
      failed = true;
    }
  }
  console.log(JSON.stringify(rec));
}

const done = (rec, r) =>
  Object.assign(rec, { input_tokens: r.prompt_eval_count, output_tokens: r.eval_count, finish_reason: r.done_reason });

const WEATHER_TOOL = {
  type: "function",
  function: {
    name: "weather",
    description: "Gets current weather for a location",
    parameters: {
      type: "object",
      properties: {
        latitude: { type: "string", description: "Latitude (e.g., 52.5200)" },
        longitude: { type: "string", description: "Longitude (e.g., 13.4050)" },
      },
      required: ["latitude", "longitude"],
    },
  },
};

await call("chat_stream", "/api/chat", model, true, async (rec) => {
  const s = await client.chat({ model, messages: [{ role: "user", content: "Why is the sky blue?" }], stream: true });
  for await (const part of s) {
    rec.chunks++;
    if (part.done) done(rec, part);
  }
});

await call("chat", "/api/chat", model, false, async (rec) => {
  done(rec, await client.chat({ model, messages: [{ role: "user", content: "Say hello." }] }));
});

await call("generate_stream", "/api/generate", model, true, async (rec) => {
  for await (const part of await client.generate({ model, prompt: "Why is the sky blue?", stream: true })) {
    rec.chunks++;
    if (part.done) done(rec, part);
  }
});

await call("generate", "/api/generate", model, false, async (rec) => {
  done(rec, await client.generate({ model, prompt: "Say hello." }));
});

await call("embed", "/api/embed", "all-minilm", false, async (rec) => {
  const r = await client.embed({ model: "all-minilm", input: "The sky is blue because of Rayleigh scattering" });
  Object.assign(rec, { input_tokens: r.prompt_eval_count, embeddings: r.embeddings.length });
});

await call("embeddings_legacy", "/api/embeddings", "all-minilm", false, async (rec) => {
  const r = await client.embeddings({ model: "all-minilm", prompt: "The sky is blue" });
  rec.embeddings = r.embedding?.length ? 1 : 0;
});

const messages = [{ role: "user", content: "What's the weather in Berlin? (52.5200, 13.4050)" }];
let toolCalls = [];
await call("chat_tools_call", "/api/chat", model, false, async (rec) => {
  const r = await client.chat({ model, messages, tools: [WEATHER_TOOL] });
  toolCalls = r.message.tool_calls ?? [];
  rec.tool_calls = toolCalls.map((t) => t.function.name);
  done(rec, r);
});
messages.push({ role: "assistant", content: "", tool_calls: toolCalls });
for (const t of toolCalls) {
  messages.push({ role: "tool", tool_name: t.function.name, content: "Current weather in Berlin: 15°C, wind 10 km/h" });
}
await call("chat_tools_result", "/api/chat", model, false, async (rec) => {
  const r = await client.chat({ model, messages, tools: [WEATHER_TOOL] });
  rec.tool_calls = (r.message.tool_calls ?? []).map((t) => t.function.name);
  done(rec, r);
});

await call("chat_thinking_stream", "/api/chat", "qwen3", true, async (rec) => {
  const s = await client.chat({ model: "qwen3", messages: [{ role: "user", content: "Count from 1 to 5." }], think: true, stream: true });
  for await (const part of s) {
    rec.chunks++;
    if (part.done) done(rec, part);
  }
});

// The client gives up mid-stream: AbortableAsyncIterator.abort() aborts the fetch, which
// closes the connection under the stream.
await call("chat_stream_aborted", "/api/chat", model, true, async (rec) => {
  const s = await client.chat({ model, messages: [{ role: "user", content: "Tell me a long story." }], stream: true });
  for await (const part of s) {
    rec.chunks++;
    if (rec.chunks === 1) {
      rec.aborted = true;
      s.abort();
    }
  }
});

process.exit(failed ? 1 : 0);
