/**
 * Differential test of the QMP protocol layer: the same scripts of raw
 * input go to qemu-storage-daemon 7.2 and to denbd's QMP server (in
 * process, with the core commands and QEMU's JSON limits), and the
 * transcripts must be identical line for line, byte for byte, once the
 * version numbers and package strings are masked: greeting, negotiation
 * errors, id echo, malformed JSON and its resynchronisation, non-object
 * input, unknown commands, bad arguments of the core commands, garbage,
 * OOB, peers that leave early, and quit.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { launch, needs, qmpMonitorArgs, type ServerProcess, withTempDir } from "./harness.ts";
import { CommandTable } from "../../src/qmp/command.ts";
import { coreCommands } from "../../src/qmp/core-commands.ts";
import { QEMU_JSON_LIMITS } from "../../src/qmp/json-stream.ts";
import { QmpServer } from "../../src/qmp/monitor.ts";

const READ_TIMEOUT_MS = 20_000;
const SYNC = '\n{"execute": "query-version", "id": "sync"}\n';

/** Bytes of a string whose characters are all below 256 (so "\xff" is one byte). */
function latin1(text: string): Uint8Array {
  return Uint8Array.from(text, (char) => {
    const code = char.charCodeAt(0);
    if (code > 0xff) throw new Error("test input must be latin1");
    return code;
  });
}

/** UTF-8 JSON text as a latin1 string of its bytes. */
function utf8(text: string): string {
  return String.fromCharCode(...new TextEncoder().encode(text));
}

/** A raw connection to a QMP socket that reads CRLF-terminated lines. */
class RawSession {
  readonly #conn: Deno.UnixConn;
  #text = "";
  #reading: Promise<number | null> | null = null;
  readonly #buffer = new Uint8Array(1 << 20);
  readonly #decoder = new TextDecoder();

  private constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
  }

  static async open(path: string): Promise<RawSession> {
    return new RawSession(await Deno.connect({ transport: "unix", path }));
  }

  /** The next line, or null at the end of the stream. */
  async line(): Promise<string | null> {
    for (;;) {
      const end = this.#text.indexOf("\r\n");
      if (end >= 0) {
        const line = this.#text.slice(0, end);
        this.#text = this.#text.slice(end + 2);
        return line;
      }
      this.#reading ??= this.#conn.read(this.#buffer).catch(() => null);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const count = await Promise.race([
        this.#reading,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no reply within ${READ_TIMEOUT_MS}ms`)),
            READ_TIMEOUT_MS,
          );
        }),
      ]).finally(() => clearTimeout(timer));
      this.#reading = null;
      if (count === null) return this.#text ? this.#rest() : null;
      this.#text += this.#decoder.decode(this.#buffer.subarray(0, count));
    }
  }

  #rest(): string {
    const rest = `<unterminated: ${this.#text}>`;
    this.#text = "";
    return rest;
  }

  async send(text: string): Promise<void> {
    const data = latin1(text);
    for (let done = 0; done < data.length;) done += await this.#conn.write(data.subarray(done));
  }

  closeWrite(): Promise<void> {
    return this.#conn.closeWrite();
  }

  async close(): Promise<void> {
    this.#conn.close();
    await this.#reading;
  }
}

/** One step: bytes to send (several writes with a pause between), then a sync request. */
type Step = string | string[];

/** What a session does, and what it reads back. */
interface SessionScript {
  readonly steps: readonly Step[];
  /** After the steps: "sync" reads up to each step's sync reply; the others end the session. */
  readonly end?: "close-now" | "half-close" | "until-eof";
  /** Sent after the steps, before ending. */
  readonly last?: string;
}

/** Run `script` on a new session to the socket at `path`; returns the transcript. */
async function runSession(path: string, script: SessionScript): Promise<string[]> {
  const session = await RawSession.open(path);
  const transcript: string[] = [];
  try {
    transcript.push(mask((await session.line())!));
    for (const [index, step] of script.steps.entries()) {
      transcript.push(`>> step ${index}`);
      for (const [part, text] of [step].flat().entries()) {
        if (part > 0) await new Promise((resolve) => setTimeout(resolve, 20));
        await session.send(text);
      }
      await session.send(SYNC);
      for (;;) {
        const line = await session.line();
        if (line === null) throw new Error(`connection closed in step ${index}`);
        transcript.push(mask(line));
        if (line.includes('"id": "sync"')) break;
      }
    }
    if (script.last !== undefined) await session.send(script.last);
    if (script.end === "close-now") return transcript;
    if (script.end === "half-close") await session.closeWrite();
    if (script.end) {
      for (let line; (line = await session.line()) !== null;) transcript.push(mask(line));
      transcript.push("<EOF>");
    }
    return transcript;
  } finally {
    await session.close();
  }
}

/** Hide what legitimately differs: QEMU's version numbers and package string. */
function mask(line: string): string {
  return line.replace(
    /\{"micro": \d+, "minor": \d+, "major": \d+\}, "package": "[^"]*"/g,
    "VERSION",
  );
}

/** Deterministic pseudo-random numbers (a 32-bit LCG). */
function random(seed: number): () => number {
  let state = seed;
  return () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32;
}

/** `count` sets of made-up member names, some colliding with real ones. */
function randomKeySets(count: number): string[][] {
  const next = random(42);
  const alphabet = "abcdefghijklmnopqrstuvwxyz-_0123456789";
  return Array.from({ length: count }, () => {
    const keys = Array.from(
      { length: 1 + Math.floor(next() * 20) },
      () =>
        Array.from(
          { length: 1 + Math.floor(next() * 7) },
          () => alphabet[Math.floor(next() * alphabet.length)],
        ).join(""),
    );
    return [...new Set(keys)];
  });
}

const IDS = [
  '"x"',
  "7",
  "-0.0",
  "0.1",
  "1e20",
  "1.5e-7",
  "123456789012345678",
  "18446744073709551615",
  "18446744073709551616",
  "-9223372036854775809",
  "1e400",
  "1.0",
  String.raw`"\u00e9\ud83d\ude00\u0000\u007f/\b\f\n\r\t"`,
  String.raw`'single\'q"'`,
  utf8('"é€😀"'),
  '"\xc0\x80"',
  "[]",
  "{}",
  "true",
  "null",
  '{"zzz": 1, "aaa": {"y": 1, "x": [2, {"micro": 1, "minor": 2}]}}',
];

const GARBAGE: Step[] = [
  '{"execute": "query-version"\njunk}',
  '{"execute": "query-version"} {"execute": "query-version", "id": 2}',
  ['{"execute": "query-', 'version", "id": "split"}'],
  ['{"execute": "query-version", "id": 1', "2", "3}"],
  '{"execute": "query-version", "id": "\xff"}',
  '{"execute": "query-version", "id": "tab\there"}',
  '{"execute": "query-version", "id": 0123}',
  '{"execute": "query-version", "id": -}',
  '{"execute": "query-version", "id": 1.}',
  '{"execute": "query-version", "id": 1e}',
  '{"execute": "query-version", "id": True}',
  '{"execute": "query-version", "id": %d}',
  '{"execute": "query-version", "id": 8, "id": 9}',
  '{"execute": "query-version" "id": 10}',
  '{"execute": "query-version", "id": 11,}',
  '{"execute": "query-version", 12: 11}',
  '{"execute": "query-version", "id" 13}',
  '{"execute": "query-version", "id": [1,]}',
  '{"execute": "query-version", "id": [1 2]}',
  String.raw`{"execute": "query-version", "id": "a\qb"}`,
  String.raw`{"execute": "query-version", "id": "a\u00"}`,
  String.raw`{"execute": "query-version", "id": "\uD800"}`,
  String.raw`{"execute": "query-version", "id": "\uD800\u0041"}`,
  String.raw`{"execute": "query-version", "id": "\uDC00"}`,
  String.raw`{"execute": "query-version", "id": "\uFFFF"}`,
  String.raw`{"execute": "query-version", "id": "\uFDD0"}`,
  String.raw`{"execute": "query-version", "id": "\uD83F\uDFFE"}`,
  String.raw`{"execute": "query-version", "id": "\u12"}`,
  String.raw`{"execute": "query-version", "id": "\u12G4"}`,
  String.raw`{"execute": "query-version", "id": "\u00` + '\xc3\xa9xx"}',
  '{"execute": "query-version", "id": "\xc3"}',
  '{"execute": "query-version", "id": "\xc1\x81"}',
  '{"execute": "query-version", "id": "\xf4\x90\x80\x80"}',
  '{"execute": "query-version", "id": "\xef\xb7\x90"}',
  '{"execute": "query-version", "id": "\xef\xbf\xbe"}',
  '{"execute": "query-version", "id": "\xed\xa0\x80"}',
  '"\xc3(\x01',
  '"\xf8\x88\x80\x80\x80z\x01',
  '"\xe2\x82\x01',
  '"\xed\xa0\x80\xc0\x80\xc1\x81\x01',
  '"\x80\x80\x01',
  "\x01",
  "\x00",
  "\xfe",
  '@@@ {"execute": "query-version", "id": "rec"}',
  'xyz"abc {"execute":"query-version","id":"rec2"}',
  "}",
  "]",
  "[{]}",
  "[}",
  "nonsense",
  "[1]",
  '"str"',
  "3 ",
  "null",
  "[".repeat(1024) + "]".repeat(1024),
  "[".repeat(1025) + "]".repeat(1025),
  '{"a": '.repeat(1025) + "1" + "}".repeat(1025),
  "[" + "1,".repeat(1048574) + "1]",
  "[" + "1,".repeat(1048575) + "1]",
];

const BEFORE_NEGOTIATION: Step[] = [
  '{"execute": "query-version"}',
  '{"execute": "nope", "id": "x"}',
  '{"execute": "quit", "id": 1}',
  '{"exec-oob": "qmp_capabilities", "id": 0}',
  '{"execute": "qmp_capabilities", "arguments": {"enable": ["foo"]}, "id": 1}',
  '{"execute": "qmp_capabilities", "arguments": {"enable": "oob"}, "id": 1}',
  '{"execute": "qmp_capabilities", "arguments": {"enable": [1]}}',
  '{"execute": "qmp_capabilities", "arguments": {"enable": null}}',
  '{"execute": "qmp_capabilities", "arguments": {"x": 1}, "id": 1}',
  '{"execute": "qmp_capabilities", "control": {}, "id": 7}',
  "[1]",
  "{}",
  '{"id": 5}',
  '{"execute": 1}',
  '{"arguments": 5}',
  "}",
  "nonsense",
  '{"execute": "qmp_capabilities", "id": {"b": 1, "a": [1, 2.5], "micro": 0, "minor": 1}}',
];

const AFTER_NEGOTIATION: Step[] = [
  '{"execute": "qmp_capabilities"}',
  '{"execute": "qmp_capabilities", "arguments": {"enable": []}}',
  '{"execute": "qmp_capabilities", "arguments": {"enable": [1]}}',
  ...IDS.map((id) => `{"execute": "query-version", "id": ${id}}`),
  ...IDS.map((id) => `{"execute": "nope", "id": ${id}}`),
  '{"execute": "query-version", "arguments": []}',
  '{"execute": "query-version", "foo": 1}',
  '{"execute": "query-version", "foo": 1, "execute2": 2}',
  '{"execute": "query-version", "id": "A", "zzz": 1, "aaa": 2, "arguments": 5}',
  '{"execute": 1, "arguments": 5}',
  '{"exec-oob": "query-version", "id": 3}',
  '{"exec-oob": "query-version", "execute": "query-version", "id": 4}',
  '{"execute": "query-version", "arguments": {"x": 1}}',
  '{"execute": "query-commands", "arguments": {"x": 1}, "id": 2}',
  '{"execute": "quit", "arguments": {"x": 1}}',
  ...randomKeySets(40).map((keys) =>
    `{"execute": "query-version", "arguments": {${keys.map((key) => `"${key}": 1`).join(", ")}}}`
  ),
  ...GARBAGE,
];

const SESSIONS: readonly SessionScript[] = [
  { steps: [...BEFORE_NEGOTIATION, ...AFTER_NEGOTIATION] },
  {
    steps: [
      '{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, "id": 1}',
      '{"exec-oob": "nope", "id": 1}',
      '{"exec-oob": "query-version", "execute": "query-version", "id": 2}',
      '{"execute": "query-version", "exec-oob": "query-version", "id": 2}',
      '{"exec-oob": "qmp_capabilities", "id": 3}',
      '{"exec-oob": 1, "id": 4}',
      '{"exec-oob": "query-version", "arguments": {"x": 1}, "id": 5}',
      '{"exec-oob": "query-version", "arguments": [], "id": 5}',
      '{"execute": "query-version", "id": 6}',
    ],
  },
  // A peer that leaves with a request half sent and replies unread.
  {
    steps: ['{"execute": "qmp_capabilities"}'],
    last: '{"execute": "query-version"}'.repeat(50) + '{"execute": "query-vers',
    end: "close-now",
  },
  // A peer that stops sending: everything sent before is still answered.
  {
    steps: [],
    last: '{"execute": "qmp_capabilities"}{"execute": "query-version", "id": 1}' +
      '{"execute": "nope", "id": 2}',
    end: "half-close",
  },
  {
    steps: ['{"execute": "qmp_capabilities"}'],
    last: '{"execute": "quit", "id": "bye"}\n{"execute": "query-version"}\n',
    end: "until-eof",
  },
];

/** Run every session in turn against the QMP socket at `path`. */
async function transcripts(path: string): Promise<string[][]> {
  const result = [];
  for (const script of SESSIONS) result.push(await runSession(path, script));
  return result;
}

/** qsd with a QMP monitor on `socket`. */
function startQsd(socket: string): Promise<ServerProcess> {
  return launch({
    command: "qemu-storage-daemon",
    args: [
      ...qmpMonitorArgs(socket),
    ],
    uri: "",
    listen: socket,
  });
}

Deno.test(
  "denbd's QMP server answers every protocol-level input exactly as qsd 7.2 does",
  needs("qemu-storage-daemon"),
  async () => {
    await withTempDir(async (dir) => {
      const qsdSocket = join(dir, "qsd.sock");
      const qsd = await startQsd(qsdSocket);
      let expected: string[][];
      try {
        expected = await transcripts(qsdSocket);
        assert.equal(await qsd.exited(), 0, "qsd exits 0 after quit");
      } finally {
        await qsd.stop().catch(() => {});
      }

      const ourSocket = join(dir, "denbd.sock");
      let quits = 0;
      const server = new QmpServer({
        commands: new CommandTable<null>(coreCommands()),
        state: null,
        requestQuit: () => quits++,
        limits: QEMU_JSON_LIMITS,
      });
      const serving = server.serve(Deno.listen({ transport: "unix", path: ourSocket }));
      try {
        const actual = await transcripts(ourSocket);
        for (const [index, transcript] of expected.entries()) {
          assert.deepEqual(actual[index], transcript, `session ${index}`);
        }
        assert.equal(quits, 1);
      } finally {
        await server.close();
        await serving;
      }
    });
  },
);
