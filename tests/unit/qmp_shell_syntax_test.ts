/**
 * The QMP shell's input syntax (qmp-shell's `COMMAND KEY=VALUE ...`, JSON
 * requests, transactions, help): what each line sends, and the message for
 * each kind of malformed line.
 */
import assert from "node:assert/strict";
import { ShellParser, shellValue, tokenize } from "../../src/qmp/shell-syntax.ts";
import type { JsonObject } from "../../src/qmp/json-value.ts";

/** The request `line` parses to with a fresh parser. */
function request(line: string): JsonObject {
  const parsed = new ShellParser().parse(line);
  assert.equal(parsed.kind, "request", Deno.inspect(parsed));
  return (parsed as { request: JsonObject }).request;
}

/** The error message `line` gets with a fresh parser. */
function error(line: string): string {
  const parsed = new ShellParser().parse(line);
  assert.equal(parsed.kind, "error", Deno.inspect(parsed));
  return (parsed as { message: string }).message;
}

Deno.test("words: white space separates, quotes keep it", () => {
  assert.deepEqual(tokenize('  a b=1\tc=\'x y\' d="p \\" q" '), [
    "a",
    "b=1",
    "c='x y'",
    'd="p \\" q"',
  ]);
  assert.deepEqual(tokenize("x=[1,'a b',2]"), ["x=[1,'a b',2]"]);
  assert.deepEqual(tokenize(""), []);
});

Deno.test("values: integers, booleans, literals, quoted and plain strings", () => {
  assert.equal(shellValue("42"), 42);
  assert.equal(shellValue("-7"), -7);
  assert.equal(shellValue("+3"), 3);
  assert.equal(shellValue("18446744073709551615"), 18446744073709551615n);
  assert.equal(shellValue("true"), true);
  assert.equal(shellValue("FALSE"), false);
  assert.equal(shellValue("null"), "null");
  assert.equal(shellValue("1.5"), "1.5");
  assert.equal(shellValue("/tmp/x"), "/tmp/x");
  assert.equal(shellValue("a=b"), "a=b");
  assert.equal(shellValue(""), "");
  assert.equal(shellValue('"a b"'), "a b");
  assert.equal(shellValue("'it\\'s'"), "it's");
  assert.equal(shellValue('"\\u00e9\\n"'), "é\n");
  assert.deepEqual(shellValue('{"a":1,"b":[true,null,1.5,"s"]}'), {
    a: 1,
    b: [true, null, 1.5, "s"],
  });
  assert.deepEqual(shellValue("{'key':'value','obj':{'prop':\"v\"}}"), {
    key: "value",
    obj: { prop: "v" },
  });
  assert.deepEqual(shellValue("[True,False,None,]"), [true, false, null]);
  assert.deepEqual(shellValue("[]"), []);
  assert.deepEqual(shellValue("[9007199254740993]"), [9007199254740993n]);
});

Deno.test("values: a malformed literal is an error naming the key", () => {
  assert.throws(() => shellValue("{bad", "x"), /Invalid value for 'x': expected a quoted key/);
  assert.throws(() => shellValue("[1,2", "x"), /Invalid value for 'x': expected ',' or '\]'/);
  assert.throws(() => shellValue("[1]]", "x"), /unexpected text at offset 3 in \[1\]\]/);
  assert.throws(() => shellValue("'abc", "x"), /unterminated string/);
  assert.throws(() => shellValue("[nope]", "x"), /unexpected 'n'/);
  assert.throws(() => shellValue('"\\q"', "x"), /invalid escape '\\q'/);
});

Deno.test("COMMAND KEY=VALUE: arguments, nested by dotted keys", () => {
  assert.deepEqual(request("query-version"), { execute: "query-version", arguments: {} });
  assert.deepEqual(
    request("nbd-server-start addr.type=inet addr.data.host=127.0.0.1 addr.data.port=10809"),
    {
      execute: "nbd-server-start",
      arguments: { addr: { type: "inet", data: { host: "127.0.0.1", port: 10809 } } },
    },
  );
  assert.deepEqual(
    request("block-export-add type=nbd id=e0 node-name=n0 writable=true bitmaps=['b0']"),
    {
      execute: "block-export-add",
      arguments: { type: "nbd", id: "e0", "node-name": "n0", writable: true, bitmaps: ["b0"] },
    },
  );
  assert.deepEqual(request("x a={'b':1} c.d.e='s p'"), {
    execute: "x",
    arguments: { a: { b: 1 }, c: { d: { e: "s p" } } },
  });
});

Deno.test("COMMAND {JSON} and {JSON request} are sent as written", () => {
  assert.deepEqual(request('block-export-del {"id": "e0", "mode": "hard"}'), {
    execute: "block-export-del",
    arguments: { id: "e0", mode: "hard" },
  });
  assert.deepEqual(request('  {"execute": "query-version", "id": 7}'), {
    execute: "query-version",
    id: 7n,
  });
});

Deno.test("malformed lines: clear messages", () => {
  assert.equal(error("x a"), "Expected a key=value pair, got 'a'");
  assert.equal(error("x a=1 a=2"), 'Cannot set "a" multiple times');
  assert.equal(error("x a=1 a.b=2"), 'Cannot use "a" as both leaf and non-leaf key');
  assert.equal(error("x a.b=1 a=2"), 'Cannot use "a" as both leaf and non-leaf key');
  assert.equal(error("x a.b.c=1 a.b=2"), 'Cannot use "a.b" as both leaf and non-leaf key');
  assert.equal(error("x a..b=1"), "Invalid key 'a..b' in 'a..b=1'");
  assert.equal(error("x =1"), "Invalid key '' in '=1'");
  assert.equal(error("x a='b"), "Unterminated string in 'a='b'");
  assert.match(error("x a=[1,"), /^Invalid value for 'a': expected a value at offset 3 in \[1,$/);
  assert.equal(error("{not json"), "Invalid request: unterminated JSON object");
  assert.match(error("{not json}"), /^Invalid request: JSON parse error/);
  assert.equal(error("x [1]"), "Expected a key=value pair, got '[1]'");
  assert.equal(error('x {"a": 1} {}'), "Invalid arguments: expected one JSON object");
  assert.equal(error("help a b"), "usage: help [COMMAND]");
});

Deno.test("blank lines and help", () => {
  const parser = new ShellParser();
  assert.deepEqual(parser.parse("   "), { kind: "nothing" });
  assert.deepEqual(parser.parse("help"), { kind: "help" });
  assert.deepEqual(parser.parse(" help blockdev-add "), { kind: "help", command: "blockdev-add" });
});

Deno.test("transactions: actions collected between 'transaction(' and ')'", () => {
  const parser = new ShellParser();
  assert.deepEqual(parser.parse("transaction("), { kind: "nothing" });
  assert.equal(parser.inTransaction, true);
  assert.deepEqual(parser.parse("block-dirty-bitmap-add node=n0 name=b1"), { kind: "nothing" });
  assert.deepEqual(parser.parse(""), { kind: "nothing" });
  assert.equal(parser.parse("block-dirty-bitmap-clear node").kind, "error");
  assert.equal(parser.inTransaction, true);
  assert.deepEqual(parser.parse("block-dirty-bitmap-clear node=n0 name=b0"), { kind: "nothing" });
  assert.deepEqual(parser.parse(")"), {
    kind: "request",
    request: {
      execute: "transaction",
      arguments: {
        actions: [
          { type: "block-dirty-bitmap-add", data: { node: "n0", name: "b1" } },
          { type: "block-dirty-bitmap-clear", data: { node: "n0", name: "b0" } },
        ],
      },
    },
  });
  assert.equal(parser.inTransaction, false);
  assert.deepEqual(parser.parse("transaction( a x=1 )"), {
    kind: "request",
    request: {
      execute: "transaction",
      arguments: { actions: [{ type: "a", data: { x: 1 } }] },
    },
  });
  assert.deepEqual(parser.parse("transaction( )"), {
    kind: "request",
    request: { execute: "transaction", arguments: { actions: [] } },
  });
  parser.parse("transaction(");
  assert.deepEqual(parser.parse(") x"), { kind: "error", message: "Unexpected input after ')'" });
  assert.equal(parser.inTransaction, true);
  assert.equal(parser.parse(")").kind, "request");
  assert.deepEqual(request(")"), { execute: ")", arguments: {} });
});

Deno.test("words from a command line: KEY=VALUE words or one JSON-ARGS word", () => {
  const parser = new ShellParser();
  assert.deepEqual(parser.parseWords(["blockdev-add", "driver=file", "filename=/a b"]), {
    kind: "request",
    request: { execute: "blockdev-add", arguments: { driver: "file", filename: "/a b" } },
  });
  assert.deepEqual(parser.parseWords(["block-export-del", '{"id": "e0"}']), {
    kind: "request",
    request: { execute: "block-export-del", arguments: { id: "e0" } },
  });
  assert.deepEqual(parser.parseWords(["query-version"]), {
    kind: "request",
    request: { execute: "query-version", arguments: {} },
  });
  assert.deepEqual(parser.parseWords(["help", "quit"]), { kind: "help", command: "quit" });
  assert.deepEqual(parser.parseWords(["x", "{x}"]), {
    kind: "error",
    message: "Invalid arguments: JSON parse error, invalid keyword 'x'",
  });
  assert.deepEqual(parser.parseWords(["x", "a"]), {
    kind: "error",
    message: "Expected a key=value pair, got 'a'",
  });
});
