// The official `openai` npm SDK (v6), unchanged, against a running AEX started by
// tests/python/aex_harness.py (a fresh database, the mock provider and the built binary).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import OpenAI from "openai";

let harness;
let aex;

before(async () => {
  harness = spawn("python3", ["../python/aex_harness.py"], { stdio: ["pipe", "pipe", "inherit"] });
  const line = await new Promise((resolve, reject) => {
    createInterface({ input: harness.stdout }).once("line", resolve);
    harness.once("exit", (code) => reject(new Error(`harness exited with ${code}`)));
  });
  aex = JSON.parse(line);
});

after(async () => {
  if (harness.exitCode !== null || harness.signalCode !== null) return; // it exited already
  harness.stdin.end(); // the harness stops AEX and drops its database
  await new Promise((resolve) => harness.once("exit", resolve));
});

async function agent(name, budgetUsd = "5.00", rpm = 600) {
  const r = await fetch(`${aex.base}/admin/agents`, {
    method: "POST",
    headers: { authorization: `Bearer ${aex.operator_token}`, "content-type": "application/json" },
    body: JSON.stringify({ name, budget_usd: budgetUsd, rpm }),
  });
  assert.equal(r.status, 201);
  return (await r.json()).token;
}

async function books(name) {
  const r = await fetch(`${aex.base}/admin/agents/${name}`, { headers: { authorization: `Bearer ${aex.operator_token}` } });
  return r.json();
}

const client = (token) => new OpenAI({ baseURL: `${aex.base}/v1`, apiKey: token, maxRetries: 0 });
const cost = (p, c) => Math.ceil((p * 150000) / 1e6) + Math.ceil((c * 600000) / 1e6);

test("a chat completion is governed and booked", async () => {
  const c = client(await agent("node-agent"));
  const { data, response } = await c.chat.completions
    .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hello from node" }] })
    .withResponse();
  assert.equal(data.model, "gpt-4o-mini");
  const expected = cost(data.usage.prompt_tokens, data.usage.completion_tokens);
  assert.equal(Number(response.headers.get("x-aex-cost-micro-usd")), expected);
  const a = await books("node-agent");
  assert.equal(a.spent_micro_usd, expected);
  assert.equal(a.reserved_micro_usd, 0);
});

test("streaming chunks carry the alias and the final usage", async () => {
  const c = client(await agent("node-streamer"));
  const stream = await c.chat.completions.create({
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: "stream" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.ok(chunks.every((ch) => ch.model === "gpt-4o-mini"));
  const usage = chunks.at(-1).usage;
  assert.equal(usage.completion_tokens, 20);
  // Read-your-writes: the last event was sent after the settlement committed; no wait needed.
  const a = await books("node-streamer");
  assert.equal(a.spent_micro_usd, cost(usage.prompt_tokens, usage.completion_tokens));
  assert.equal(chunks.at(-1).aex.cost_micro_usd, a.spent_micro_usd);
});

test("embeddings, responses, tool calls and response_format work", async () => {
  const c = client(await agent("node-multi"));
  const emb = await c.embeddings.create({ model: "text-embedding-3-small", input: "node" });
  assert.equal(emb.data.length, 1);

  const resp = await c.responses.create({ model: "gpt-4o-mini", input: "hi", max_output_tokens: 8 });
  assert.equal(resp.model, "gpt-4o-mini");
  assert.equal(resp.usage.output_tokens, 8);
  const events = [];
  for await (const e of await c.responses.create({ model: "gpt-4o-mini", input: "hi", stream: true })) events.push(e.type);
  assert.equal(events.at(-1), "response.completed");

  const tools = [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: {} } } }];
  const messages = [{ role: "user", content: "weather?" }];
  const first = await c.chat.completions.create({ model: "gpt-4o-mini", messages, tools });
  const call = first.choices[0].message.tool_calls[0];
  assert.equal(call.function.name, "get_weather");
  messages.push(first.choices[0].message, { role: "tool", tool_call_id: call.id, content: "sunny" });
  const second = await c.chat.completions.create({ model: "gpt-4o-mini", messages, tools });
  assert.ok(second.choices[0].message.content);

  const formatted = await c.chat.completions.create({
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: "json" }],
    response_format: { type: "json_object" },
  });
  assert.deepEqual(JSON.parse(formatted.choices[0].message.content), { answer: "mock" });
});

test("errors surface as the SDK's exception classes", async () => {
  const poor = client(await agent("node-poor", "0.000010"));
  await assert.rejects(
    poor.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }] }),
    (e) => e instanceof OpenAI.APIError && e.status === 402 && e.code === "insufficient_budget",
  );
  await assert.rejects(
    client("not-a-token").chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }] }),
    OpenAI.AuthenticationError,
  );
  const rich = client(await agent("node-rich"));
  await assert.rejects(
    rich.chat.completions.create({ model: "nope", messages: [{ role: "user", content: "x" }] }),
    OpenAI.NotFoundError,
  );
  const headers = { "Idempotency-Key": "node-conflict" };
  await rich.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "a" }] }, { headers });
  await assert.rejects(
    rich.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "b" }] }, { headers }),
    OpenAI.ConflictError,
  );
});

test("a rate-limited agent gets RateLimitError", async () => {
  const c = client(await agent("node-throttled", "5.00", 1));
  await c.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "one" }] });
  await assert.rejects(
    c.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "two" }] }),
    (e) => e instanceof OpenAI.RateLimitError && e.code === "rate_limit_exceeded",
  );
});
