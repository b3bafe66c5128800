/**
 * The terminal line editor driven by scripted key input: editing keys,
 * history seeded from earlier sessions, and Tab completion as readline does
 * it (common prefix, a space after the only candidate, bell, a second Tab
 * lists the candidates).
 */
import assert from "node:assert/strict";
import { LineEditor, type Terminal } from "../../src/cli/line-editor.ts";

/** A terminal whose keys are `chunks` (one read each) and whose output is kept. */
class ScriptedTerminal implements Terminal {
  readonly #chunks: Uint8Array[];
  readonly #decoder = new TextDecoder();
  output = "";
  raw = false;

  constructor(...chunks: string[]) {
    this.#chunks = chunks.map((chunk) => new TextEncoder().encode(chunk));
  }

  read(buffer: Uint8Array): Promise<number | null> {
    const chunk = this.#chunks.shift();
    if (!chunk) return Promise.resolve(null);
    buffer.set(chunk);
    return Promise.resolve(chunk.length);
  }

  setRaw(raw: boolean): void {
    this.raw = raw;
  }

  writeSync(data: Uint8Array): number {
    this.output += this.#decoder.decode(data);
    return data.length;
  }

  columns(): number {
    return 80;
  }
}

const COMMANDS = ["query-block", "query-block-exports", "query-version", "quit"];

/** Completes the first word from COMMANDS, later words from `id=` and `mode=`. */
function complete(beforeCursor: string) {
  const start = /\S*$/.exec(beforeCursor)!.index;
  const word = beforeCursor.slice(start);
  const words = start === 0 ? COMMANDS : ["id=", "mode="];
  return { start, candidates: words.filter((candidate) => candidate.startsWith(word)) };
}

/** The lines an editor reads from `chunks` until the end of input, and the terminal. */
async function readAll(
  chunks: string[],
  history: string[] = [],
): Promise<{ lines: string[]; terminal: ScriptedTerminal; editor: LineEditor }> {
  const terminal = new ScriptedTerminal(...chunks);
  const editor = new LineEditor("> ", { complete, history, terminal });
  const lines: string[] = [];
  for (let line; (line = await editor.readLine()) !== null;) lines.push(line);
  assert.equal(terminal.raw, false, "raw mode is left after each line");
  return { lines, terminal, editor };
}

Deno.test("editing keys: insert, move, delete, Ctrl-U/K, Ctrl-C", async () => {
  const { lines } = await readAll([
    "helo\x1b[D\x1b[Dl\r",
    "abc\x01X\x05Y\r",
    "abcdef\x1b[D\x1b[D\x0b\r",
    "abcdef\x1b[D\x1b[D\x15\r",
    "gone\x03kept\r",
    "x\x7f\x7fy\x1b[D\x1b[3~z\r",
  ]);
  assert.deepEqual(lines, ["hello", "XabcY", "abcd", "ef", "kept", "z"]);
});

Deno.test("an escape sequence split across reads is one key", async () => {
  const { lines } = await readAll(["ab\x1b", "[D", "c\r"]);
  assert.deepEqual(lines, ["acb"]);
});

Deno.test("history: earlier sessions' lines on the up arrow, then this session's", async () => {
  const { lines, editor } = await readAll(
    ["\x1b[A\r", "new\r", "\x1b[A\x1b[A\x1b[A\x1b[B\r", "draft\x1b[A\x1b[B\r"],
    ["old1", "old2"],
  );
  assert.deepEqual(lines, ["old2", "new", "old2", "draft"]);
  assert.deepEqual(editor.history, ["old1", "old2", "new", "old2", "draft"]);
});

Deno.test("Ctrl-D on an empty line ends input; elsewhere it deletes", async () => {
  const { lines } = await readAll(["ab\x01\x04\r", "\x04", "never\r"]);
  assert.deepEqual(lines, ["b"]);
});

Deno.test("Tab: the only candidate with a space, or the common prefix", async () => {
  const { lines } = await readAll(["qui\t\r", "query-v\tx\r", "query-b\t\r", "quit i\t1\r"]);
  assert.deepEqual(lines, ["quit ", "query-version x", "query-block", "quit id=1"]);
  const listed = await readAll(["q\t\t\r"]);
  assert.deepEqual(listed.lines, ["qu"], "a Tab after a Tab that completed lists at once");
  assert.match(listed.terminal.output, /query-block {10}query-version\r\n/);
});

Deno.test("Tab: the bell when nothing can be added, a second Tab lists", async () => {
  const { lines, terminal } = await readAll(["qu\t", "\t", "it\r"]);
  assert.deepEqual(lines, ["quit"]);
  const afterFirst = terminal.output.indexOf("\x07");
  assert.ok(afterFirst >= 0, "the first Tab rings the bell");
  const listing = terminal.output.slice(afterFirst).split("\r\n").slice(0, 2)
    .map((line) => line.split("\x1b[K").at(-1));
  assert.deepEqual(listing, [
    "query-block          query-version",
    "query-block-exports  quit",
  ]);
  assert.equal(terminal.output.split("\x07").length, 2, "one bell only");
});

Deno.test("Tab mid-line completes the word before the cursor", async () => {
  const { lines } = await readAll(["query-ve x\x1b[D\x1b[D\t\r"]);
  assert.deepEqual(lines, ["query-version  x"]);
});
