import assert from "node:assert/strict";
import { firstLine } from "../../src/cli/content-probe.ts";

const encode = (text: string) => new TextEncoder().encode(text);

Deno.test("file(1)'s first line, without its newline; nothing printed is no description", () => {
  assert.equal(firstLine(encode("data\n")), "data");
  assert.equal(firstLine(encode("one\ntwo\n")), "one");
  assert.equal(firstLine(encode("no newline")), "no newline");
  assert.equal(firstLine(encode("\n")), "");
  assert.equal(firstLine(new Uint8Array(0)), undefined);
});
