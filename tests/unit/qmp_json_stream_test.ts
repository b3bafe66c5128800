/**
 * The JSON stream splitter against what qemu-storage-daemon 7.2 does with
 * the same bytes: every error text below is qsd's reply to that input.
 */

import assert from "node:assert/strict";
import { type JsonStreamItem, JsonStreamParser } from "../../src/qmp/json-stream.ts";

/** Bytes of `text`, each char one byte (so "\xff" is the byte 0xFF). */
function bytes(text: string): Uint8Array {
  return Uint8Array.from(text, (char) => char.charCodeAt(0));
}

/** Feed `text` in one chunk to a fresh parser (or `parser`). */
function feed(text: string, parser = new JsonStreamParser()): JsonStreamItem[] {
  return parser.feed(bytes(text));
}

const error = (message: string) => ({ error: message });
const parseError = (message: string) => error(`JSON parse error, ${message}`);

Deno.test("values may share a line, span reads, and need no line end", () => {
  const parser = new JsonStreamParser();
  assert.deepEqual(feed('{"execute": "a"} {"execute"', parser), [{ value: { execute: "a" } }]);
  assert.deepEqual(feed(': "b", "id": [1, ', parser), []);
  assert.deepEqual(feed("2]}", parser), [{ value: { execute: "b", id: [1n, 2n] } }]);
  const text = '{"a": {"b": [true, false, null]}}{"c": "d"}';
  const single = new JsonStreamParser();
  const items = [...text].flatMap((char) => feed(char, single));
  assert.deepEqual(items, [{ value: { a: { b: [true, false, null] } } }, { value: { c: "d" } }]);
});

Deno.test("a top-level scalar ends with the byte after it", () => {
  const parser = new JsonStreamParser();
  assert.deepEqual(feed("12", parser), []);
  assert.deepEqual(feed(" ", parser), [{ value: 12n }]);
  assert.deepEqual(feed('"s"', parser), [{ value: "s" }]);
});

Deno.test("integers are bigints within 64 bits, everything else a double", () => {
  const [item] = feed(
    "[0, -0, 1.0, 2.5e3, 9223372036854775807, -9223372036854775808, 18446744073709551615, " +
      "18446744073709551616, -9223372036854775809, 1e400]",
  );
  assert.deepEqual(item, {
    value: [
      0n,
      0n,
      1,
      2500,
      9223372036854775807n,
      -9223372036854775808n,
      18446744073709551615n,
      18446744073709552000,
      -9223372036854775808,
      Infinity,
    ],
  });
});

Deno.test("strings: escapes, single quotes, surrogate pairs, modified UTF-8", () => {
  const [item] = feed(
    String.raw`["\"\\\/\b\f\n\r\t", 'single"q\'', "\u00e9\ud83d\ude00", "\u0000"` +
      ', "\xc3\xa9", "\xc0\x80", "\xf0\x9f\x98\x80"]',
  );
  assert.deepEqual(item, {
    value: ['"\\/\b\f\n\r\t', "single\"q'", "\u00e9\u{1f600}", "\0", "\u00e9", "\0", "\u{1f600}"],
  });
});

Deno.test("parse errors, as qsd words them", () => {
  const cases: [string, JsonStreamItem[]][] = [
    ["}", [parseError("expecting value")]],
    ["]", [parseError("expecting value")]],
    ["nonsense\n", [parseError("invalid keyword 'nonsense'")]],
    ['{"execute": "query-version"\njunk}', [parseError("expected separator in dict")]],
    ['{"a": 8, "a": 9}', [parseError("duplicate key")]],
    ['{"a": "b" "id": 10}', [parseError("expected separator in dict")]],
    ['{"a": 1,}', [parseError("expecting value")]],
    ['{"a": 1, 12: 11}', [parseError("key is not a string in object")]],
    ['{"a" 13}', [parseError("missing : in object pair")]],
    ["[1,]", [parseError("expecting value")]],
    ["[1 2]", [parseError("expected separator in list")]],
    ["[{]}", [parseError("expecting value")]],
    ["[}", [parseError("expecting value")]],
    [String.raw`"a\qb"`, [parseError("invalid escape sequence in string")]],
    [String.raw`"a\u00"`, [parseError(String.raw`\u00" is not a valid Unicode character`)]],
    [String.raw`"\u12G4"`, [parseError(String.raw`\u12G4 is not a valid Unicode character`)]],
    [String.raw`"\uD800"`, [parseError(String.raw`\uD800 is not a valid Unicode character`)]],
    [String.raw`"\uD800\u0041"`, [parseError(String.raw`\uD800 is not a valid Unicode character`)]],
    [String.raw`"\uDC00"`, [parseError(String.raw`\uDC00 is not a valid Unicode character`)]],
    [String.raw`"\uFFFF"`, [parseError(String.raw`\uFFFF is not a valid Unicode character`)]],
    [String.raw`"\uFDD0"`, [parseError(String.raw`\uFDD0 is not a valid Unicode character`)]],
    [
      String.raw`"\uD83F\uDFFE"`,
      [parseError(String.raw`\uD83F\uDFFE is not a valid Unicode character`)],
    ],
    [String.raw`"\u00` + '\xc3\xa9xx"', [
      parseError(String.raw`\u00` + "\u00e9 is not a valid Unicode character"),
    ]],
    ['"\xc3"', [parseError("invalid UTF-8 sequence in string")]],
    ['"\xc1\x81"', [parseError("invalid UTF-8 sequence in string")]],
    ['"\xf4\x90\x80\x80"', [parseError("invalid UTF-8 sequence in string")]],
    ['"\xef\xb7\x90"', [parseError("invalid UTF-8 sequence in string")]],
    ['"\xef\xbf\xbe"', [parseError("invalid UTF-8 sequence in string")]],
    ['"\xed\xa0\x80"', [parseError("invalid UTF-8 sequence in string")]],
  ];
  for (const [input, expected] of cases) assert.deepEqual(feed(input), expected, input);
});

Deno.test("a stray byte is reported with its token, then input is skipped to a resync point", () => {
  const cases: [string, JsonStreamItem[]][] = [
    ['{"id": "\xff"}\n', [parseError("stray '\"\ufffd'"), parseError("expecting value")]],
    ['{"id": "tab\there"}\n', [parseError("stray '\"tab\t'"), parseError("expecting value")]],
    ['{"id": 0123}\n', [parseError("stray '01'"), parseError("expecting value")]],
    ['{"id": -}\n', [parseError("stray '-}'")]],
    ['{"id": 1.}\n', [parseError("stray '1.}'")]],
    ['{"id": 1e}\n', [parseError("stray '1e}'")]],
    ['{"id": True}\n', [parseError("stray 'T'"), parseError("expecting value")]],
    ['{"id": %d}\n', [parseError("stray '%'"), parseError("expecting value")]],
    ['"\xc3(\x01\n', [parseError("stray '\"\ufffd(\x01'")]],
    ['"\xf8\x88\x80\x80\x80z\x01\n', [parseError("stray '\"\ufffdz\x01'")]],
    ['"\xe2\x82\x01\n', [parseError("stray '\"\ufffd\x01'")]],
    ['"\xed\xa0\x80\xc0\x80\xc1\x81\x01\n', [parseError("stray '\"\ufffd\0\ufffd\x01'")]],
    ['"\x80\x80\x01\n', [parseError("stray '\"\ufffd\ufffd\x01'")]],
    ["\x01\n", [parseError("stray '\x01'")]],
    ["\x00\n", [parseError("stray ''")]],
    ['@@@ {"x": 1}\n', [parseError("stray '@'"), { value: { x: 1n } }]],
    [
      'xyz"abc {"execute":"query-version","id":"rec2"}\n',
      [
        parseError("invalid keyword 'xyz'"),
        { value: "abc {" },
        parseError("invalid keyword 'execute'"),
        { value: ":" },
        parseError("invalid keyword 'query'"),
        parseError("stray '-v'"),
        parseError("expecting value"),
        { value: "id" },
        parseError("expecting value"),
        { value: "rec2" },
        parseError("expecting value"),
      ],
    ],
  ];
  for (const [input, expected] of cases) assert.deepEqual(feed(input), expected, input);
});

Deno.test("nesting beyond 1024 is refused; each unmatched closer is then an error", () => {
  assert.deepEqual(feed("[".repeat(1024) + "]".repeat(1024) + "\n"), [{
    value: [...Array(1023)].reduce((inner) => [inner], []),
  }]);
  const items = feed("[".repeat(1025) + "]".repeat(1025) + "\n");
  assert.equal(items.length, 1026);
  assert.deepEqual(items[0], error("JSON nesting depth limit exceeded"));
  assert.deepEqual(
    new Set(items.slice(1).map((item) => JSON.stringify(item))),
    new Set([
      JSON.stringify(parseError("expecting value")),
    ]),
  );
});

Deno.test("the token count and token size limits drop the value, like QEMU's", () => {
  const counted = new JsonStreamParser({ maxTokens: 8 });
  assert.deepEqual(feed("[1, 2, 3]", counted), [{ value: [1n, 2n, 3n] }]);
  // [ 1 , 2 , 3 , 4 ] is 9 tokens: the closing bracket is refused.
  assert.deepEqual(feed("[1, 2, 3, 4]", counted), [error("JSON token count limit exceeded")]);
  const sized = new JsonStreamParser({ maxValueBytes: 100 });
  // A token is refused when the bytes of the tokens before it, its own and one more exceed
  // the limit: for "]" after "[" and a string token of 97 bytes that is 1 + 97 + 1 + 1 = 100.
  assert.deepEqual(feed(`["${"a".repeat(95)}"]`, sized), [{ value: ["a".repeat(95)] }]);
  assert.deepEqual(feed(`["${"a".repeat(96)}"]`, sized), [error("JSON token size limit exceeded")]);
  // A single token beyond the limit is cut there, and lexing restarts after it.
  assert.deepEqual(feed(`"${"a".repeat(110)}"\n`, sized), [
    error("JSON token size limit exceeded"),
    parseError(`invalid keyword '${"a".repeat(10)}'`),
    parseError("stray '\"\n'"),
  ]);
  assert.deepEqual(feed('{"execute": "x"}', sized), [{ value: { execute: "x" } }]);
});

Deno.test("the stream goes on after a flood of input beyond the size limit", () => {
  const parser = new JsonStreamParser({ maxValueBytes: 1 << 16 });
  const chunk = bytes("[" + "1,".repeat(4096));
  let errors = 0;
  for (let i = 0; i < 256; i++) errors += parser.feed(chunk).length;
  assert.ok(errors > 0);
  assert.deepEqual(feed('\x01{"ok": true}', parser), [parseError("stray '\x01'"), {
    value: { ok: true },
  }]);
});
