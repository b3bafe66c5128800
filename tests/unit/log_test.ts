/**
 * The Logger's records: levels, text and JSON lines, context fields,
 * timestamps, and peer-controlled text quoted and bounded.
 */

import assert from "node:assert/strict";
import {
  LOG_LEVELS,
  Logger,
  type LoggerOptions,
  loggerOptionsOf,
  MAX_LOGGED_TEXT_LENGTH,
  quoted,
} from "../../src/log.ts";

/** A logger with `options` whose lines are kept in `lines`. */
function capturing(options: LoggerOptions = {}): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: new Logger({ ...options, write: (line) => lines.push(line) }), lines };
}

/** One record of each level, least severe first. */
function logEachLevel(log: Logger): void {
  log.debug("d");
  log.info("i");
  log.warn("w");
  log.error("e");
}

const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

Deno.test("log: a level shows its own records and the more severe ones", () => {
  const expected = { debug: "d i w e", info: "i w e", warn: "w e", error: "e" };
  for (const level of LOG_LEVELS) {
    const { log, lines } = capturing({ level, prefix: "p" });
    logEachLevel(log);
    assert.deepEqual(lines, expected[level].split(" ").map((message) => `p: ${message}`), level);
    assert.equal(log.enabled("debug"), level === "debug", level);
    assert.equal(log.enabled("error"), true, level);
  }
  const { log, lines } = capturing();
  logEachLevel(log);
  assert.equal(lines.length, 3, "info by default");
});

Deno.test("log: text lines name the client and its address; times only when asked", () => {
  const plain = capturing();
  const client = plain.log.child({ client: 3, peer: "127.0.0.1:5555" });
  client.warn("closing connection: reset");
  client.child({ export: "disk" }).info("in transmission");
  plain.log.child({ client: 4, peer: "unix" }).info("connected");
  plain.log.info("no client");
  assert.deepEqual(plain.lines, [
    "denbd: client 3 (127.0.0.1:5555): closing connection: reset",
    "denbd: client 3 (127.0.0.1:5555): in transmission",
    "denbd: client 4 (unix): connected",
    "denbd: no client",
  ]);
  const timed = capturing({ timestamps: true, prefix: "denbd daemon" });
  timed.log.child({ client: 1, peer: "[::1]:40000" }).info("connected");
  const [time, rest] = [timed.lines[0].slice(0, 24), timed.lines[0].slice(24)];
  assert.match(time, ISO_TIME);
  assert.ok(Math.abs(Date.parse(time) - Date.now()) < 60_000, time);
  assert.equal(rest, " denbd daemon: client 1 ([::1]:40000): connected");
});

Deno.test("log: JSON lines have time, level, msg, then the fields the record has", () => {
  const { log, lines } = capturing({ format: "json", level: "debug" });
  const client = log.child({ client: 7, peer: "127.0.0.1:1" });
  client.debug("connected");
  client.child({ export: "disk" }).error("READ failed");
  client.info("refused", { export: "other" });
  log.warn("accept failed");
  const records = lines.map((line) => JSON.parse(line));
  for (const record of records) assert.match(record.time, ISO_TIME);
  assert.deepEqual(records.map((record) => Object.keys(record)), [
    ["time", "level", "msg", "client", "peer"],
    ["time", "level", "msg", "client", "peer", "export"],
    ["time", "level", "msg", "client", "peer", "export"],
    ["time", "level", "msg"],
  ]);
  assert.deepEqual(records.map(({ time: _, ...rest }) => rest), [
    { level: "debug", msg: "connected", client: 7, peer: "127.0.0.1:1" },
    { level: "error", msg: "READ failed", client: 7, peer: "127.0.0.1:1", export: "disk" },
    { level: "info", msg: "refused", client: 7, peer: "127.0.0.1:1", export: "other" },
    { level: "warn", msg: "accept failed" },
  ]);
});

Deno.test("log: a JSON line stays one line whatever the text, and the export field is bounded", () => {
  const { log, lines } = capturing({ format: "json" });
  const name = "a\nb\u2028c\x1b" + "x".repeat(5000);
  log.info(`refused export ${quoted(name)}`, { export: name });
  log.info("line\nbreak");
  assert.equal(lines.length, 2);
  for (const line of lines) assert.ok(!/[\n\r]/.test(line), line);
  const record = JSON.parse(lines[0]);
  assert.ok(record.export.startsWith("a\nb\u2028c\x1b"));
  assert.ok(record.export.length < MAX_LOGGED_TEXT_LENGTH + 40, `${record.export.length}`);
  const cut = name.length - MAX_LOGGED_TEXT_LENGTH;
  assert.ok(record.export.endsWith(`... (${cut} more characters)`), record.export.slice(-40));
  assert.equal(JSON.parse(lines[1]).msg, "line\nbreak");
});

Deno.test("log: quoted escapes control characters, quotes and backslashes, and bounds length", () => {
  assert.equal(quoted("disk"), "'disk'");
  assert.equal(quoted(""), "''");
  assert.equal(quoted("a'b\\c"), "'a\\'b\\\\c'");
  assert.equal(
    quoted("\n\r\t\x00\x1b\x7f\x85\u2028\u2029"),
    "'\\n\\r\\t\\x00\\x1b\\x7f\\x85\\u2028\\u2029'",
  );
  assert.equal(quoted("é日本"), "'é日本'", "printable text is kept");
  const long = quoted("y".repeat(MAX_LOGGED_TEXT_LENGTH + 10));
  assert.equal(long, `'${"y".repeat(MAX_LOGGED_TEXT_LENGTH)}... (10 more characters)'`);
  assert.equal(
    quoted("z".repeat(MAX_LOGGED_TEXT_LENGTH)),
    `'${"z".repeat(MAX_LOGGED_TEXT_LENGTH)}'`,
  );
});

Deno.test("log: verbatim text is printed as it is, and is a record in JSON", () => {
  const text = capturing({ timestamps: true });
  text.log.verbatim("warn", "WARNING: as the peer says it");
  text.log.verbatim("debug", "hidden at info");
  assert.deepEqual(text.lines, ["WARNING: as the peer says it"]);
  const json = capturing({ format: "json" });
  json.log.verbatim("warn", "WARNING: two\nlines");
  const { time: _, ...record } = JSON.parse(json.lines[0]);
  assert.deepEqual(record, { level: "warn", msg: "WARNING: two\nlines" });
});

Deno.test("log: -v, --log-level and --log-format as logger options", () => {
  const options = (flags: Parameters<typeof loggerOptionsOf>[0]) => {
    const { level, format, timestamps } = loggerOptionsOf(flags);
    return { level, format, timestamps };
  };
  assert.deepEqual(options({}), { level: "info", format: "text", timestamps: false });
  assert.deepEqual(options({ verbose: true }), {
    level: "debug",
    format: "text",
    timestamps: true,
  });
  assert.deepEqual(options({ verbose: true, level: "warn" }), {
    level: "warn",
    format: "text",
    timestamps: true,
  });
  assert.deepEqual(options({ level: "info" }), { level: "info", format: "text", timestamps: true });
  assert.deepEqual(options({ format: "json" }), {
    level: "info",
    format: "json",
    timestamps: true,
  });
  assert.equal(loggerOptionsOf({}, "denbd daemon").prefix, "denbd daemon");
});
