/**
 * QEMU's keyval syntax. Every message below was recorded from
 * qemu-storage-daemon 7.2.22 (Debian) given the same string as `--blockdev`
 * (implied key `driver`), `--nbd-server` (no implied key) or `--object`; the
 * last test replays the error cases against the real qsd when it is installed.
 */
import assert from "node:assert/strict";
import {
  HELP_NOT_AVAILABLE,
  isJsonArgument,
  KeyvalError,
  parseKeyval,
  parseKeyvalHelp,
  QSD_IMPLIED_KEYS,
} from "../../src/qmp/keyval.ts";
import { qdictKeys } from "../../src/qmp/json-value.ts";
import { DenbdError } from "../../src/errors.ts";
import { QSD, qsdAvailable, runQsd } from "./qsd_option.ts";

/** The message `parseKeyval(text, implied)` throws. */
function keyvalError(text: string, implied?: string): string {
  try {
    parseKeyval(text, implied);
  } catch (e) {
    assert.ok(e instanceof KeyvalError, `not a KeyvalError: ${e}`);
    return e.message;
  }
  assert.fail(`no error for ${JSON.stringify(text)}`);
}

const LONG = "a".repeat(127) + "z"; // 128 characters: one too many
const LONGEST = "a".repeat(127);

/** [input, implied key, QEMU's message]; each was checked against qsd 7.2. */
const KEYVAL_ERRORS: [string, string | undefined, string][] = [
  // Empty keys and fragments.
  ["=val", undefined, "Invalid parameter ''"],
  ["=val", "driver", "Invalid parameter ''"],
  [",", undefined, "Invalid parameter ''"],
  [",", "driver", "Invalid parameter ''"],
  [".", undefined, "Invalid parameter '.'"],
  ["key.", undefined, "Invalid parameter 'key.'"],
  ["driver=file,a.=1", "driver", "Invalid parameter 'a.'"],
  ["driver=file,.a=1", "driver", "Invalid parameter '.a'"],
  // Keys that are not QAPI names (a letter, then letters, digits, '-', '_').
  ["7up=val", undefined, "Invalid parameter '7up'"],
  ["7up=val", "driver", "Invalid parameter '7up'"],
  ["key[0]=val", undefined, "Invalid parameter 'key[0]'"],
  ["driver=file,a b=1", "driver", "Invalid parameter 'a b'"],
  ["driver=file,a._x=1", "driver", "Invalid parameter 'a._x'"],
  ["driver=file,a.0b=1", "driver", "Invalid parameter 'a.0b'"],
  ["0=1", undefined, "Invalid parameter '0'"],
  ["0=1", "driver", "Invalid parameter '0'"],
  // The implied key's value ends at the first comma: ",," cannot be in it.
  ["val,,ue", "driver", "Invalid parameter ''"],
  [",,,a=1", "driver", "Invalid parameter ''"],
  // Over-long keys (127 characters is the most).
  [`${LONG}=v`, undefined, `Parameter '${LONG}' is too long`],
  [`driver=file,${LONG}=v`, "driver", `Parameter '${LONG}' is too long`],
  [`k.${LONG}=v`, undefined, `Parameter fragment '${LONG}' is too long`],
  [`${LONG}.k=v`, undefined, `Parameter fragment '${LONG}' is too long`],
  // Missing '=' (only the first element can stand for the implied key).
  ["an,noaus", undefined, "Expected '=' after parameter 'an'"],
  ["an,noaus", "driver", "Expected '=' after parameter 'noaus'"],
  ["file,x", "driver", "Expected '=' after parameter 'x'"],
  ["file,no", "driver", "Expected '=' after parameter 'no'"],
  ["no", undefined, "Expected '=' after parameter 'no'"],
  ["unix,addr.path=/tmp/s", undefined, "Expected '=' after parameter 'unix'"],
  ["help.abc", undefined, "Expected '=' after parameter 'help.abc'"],
  ["c0,pretty", "chardev", "Expected '=' after parameter 'pretty'"],
  ["driver=file,helpme", "driver", "Expected '=' after parameter 'helpme'"],
  // A key both a value and an object.
  ["a.b=1,a=2", undefined, "Parameters 'a.*' used inconsistently"],
  ["a.b=1,a=2", "driver", "Parameters 'a.*' used inconsistently"],
  ["a=1,a.b=2", "driver", "Parameters 'a.*' used inconsistently"],
  ["a.b=1,a.b.c=2", undefined, "Parameters 'a.b.*' used inconsistently"],
  ["file,driver.x=1", "driver", "Parameters 'driver.*' used inconsistently"],
  // A key both a list and an object.
  ["a.b.c=1,a.b.0=2", undefined, "Parameters 'a.b.*' used inconsistently"],
  ["a.0.c=1,a.b.c=2", undefined, "Parameters 'a.*' used inconsistently"],
  // List indexes must start at 0 and have no gaps.
  ["list.1=lonely", undefined, "Parameter 'list.0' missing"],
  ["list.1=lonely", "driver", "Parameter 'list.0' missing"],
  ["list.0=null,list.2=eins,list.02=zwei", undefined, "Parameter 'list.1' missing"],
  ["driver=file,a.99999999999=x", "driver", "Parameter 'a.0' missing"],
  ["a.b.0=x,a.b.2=y", undefined, "Parameter 'a.b.1' missing"],
  ["x.0.1=y", undefined, "Parameter 'x.0.0' missing"],
  // Help where no help is offered (every option but --object).
  ["help", undefined, HELP_NOT_AVAILABLE],
  ["help", "driver", HELP_NOT_AVAILABLE],
  ["?", "driver", HELP_NOT_AVAILABLE],
  ["file,help", "driver", HELP_NOT_AVAILABLE],
  ["driver=file,filename=d.img,?", "driver", HELP_NOT_AVAILABLE],
  ["help,list.1=x", undefined, HELP_NOT_AVAILABLE],
];

Deno.test("keyval: every error carries QEMU's message", () => {
  for (const [text, implied, message] of KEYVAL_ERRORS) {
    assert.equal(keyvalError(text, implied), message, `${JSON.stringify(text)} (${implied})`);
  }
});

Deno.test("keyval: errors are invalid-kind DenbdErrors named KeyvalError", () => {
  try {
    parseKeyval("=x");
    assert.fail("no error");
  } catch (e) {
    assert.ok(e instanceof DenbdError);
    assert.equal(e.kind, "invalid");
    assert.equal(e.name, "KeyvalError");
  }
});

Deno.test("keyval: a parse error beats a help request, which beats list errors", () => {
  assert.equal(keyvalError("help,0=y"), "Invalid parameter '0'");
  assert.equal(keyvalError("help,list.1=x"), HELP_NOT_AVAILABLE);
  assert.equal(keyvalError("a.b=1,a=2,7up=x"), "Parameters 'a.*' used inconsistently");
});

Deno.test("keyval: empty input, plain keys, the last of several wins", () => {
  assert.deepEqual(parseKeyval(""), {});
  assert.deepEqual(parseKeyval("", "driver"), {});
  assert.deepEqual(parseKeyval("a=1,b=2,,x,a=3"), { a: "3", b: "2,x" });
  assert.deepEqual(parseKeyval("id=foo,id=bar"), { id: "bar" });
  assert.deepEqual(parseKeyval("id=666"), { id: "666" });
  assert.deepEqual(parseKeyval("x="), { x: "" });
  assert.deepEqual(parseKeyval("a=b=c"), { a: "b=c" });
});

Deno.test("keyval: commas: ',,' is one comma in a value, a trailing comma is ignored", () => {
  assert.deepEqual(parseKeyval("x=y,"), { x: "y" });
  assert.deepEqual(parseKeyval("x=y,,"), { x: "y," });
  assert.deepEqual(parseKeyval("x=,,id=bar"), { x: ",id=bar" });
  assert.deepEqual(parseKeyval("path=/tmp/a,,b.sock,type=unix"), {
    path: "/tmp/a,b.sock",
    type: "unix",
  });
  assert.deepEqual(parseKeyval("x=,,,,"), { x: ",," });
});

Deno.test("keyval: dotted keys build nested objects", () => {
  assert.deepEqual(parseKeyval("a.b.c=1,a.b.c=2,d=3"), { a: { b: { c: "2" } }, d: "3" });
  assert.deepEqual(
    parseKeyval("addr.type=inet,addr.host=127.0.0.1,addr.port=10809,max-connections=2"),
    { addr: { type: "inet", host: "127.0.0.1", port: "10809" }, "max-connections": "2" },
  );
  assert.deepEqual(parseKeyval("file,cache.direct=on,cache.no-flush=off", "driver"), {
    driver: "file",
    cache: { direct: "on", "no-flush": "off" },
  });
});

Deno.test("keyval: keys of 127 characters are fine, and so are downstream names", () => {
  assert.deepEqual(parseKeyval(`${LONGEST}=v`), { [LONGEST]: "v" });
  assert.deepEqual(parseKeyval(`k.${LONGEST}=v`), { k: { [LONGEST]: "v" } });
  // A downstream prefix __RFQDN_ may hold dots: this is one key, not a nested one.
  assert.deepEqual(parseKeyval("__com.redhat_x=1"), { "__com.redhat_x": "1" });
  assert.deepEqual(parseKeyval("a-b_c9=1,A=2"), { "a-b_c9": "1", A: "2" });
});

Deno.test("keyval: numeric fragments build lists, in any order", () => {
  assert.deepEqual(parseKeyval("list.0=null,list.2=zwei,list.1=eins"), {
    list: ["null", "eins", "zwei"],
  });
  assert.deepEqual(parseKeyval("a.list.1=eins,a.list.00=null,a.list.2=zwei"), {
    a: { list: ["null", "eins", "zwei"] },
  });
  assert.deepEqual(parseKeyval("nbd,id=e0,node-name=n0,bitmaps.0=b0,bitmaps.1=b1", "type"), {
    type: "nbd",
    id: "e0",
    "node-name": "n0",
    bitmaps: ["b0", "b1"],
  });
  assert.deepEqual(parseKeyval("bitmaps.0.node=n,bitmaps.0.name=b,bitmaps.1=c"), {
    bitmaps: [{ node: "n", name: "b" }, "c"],
  });
  assert.deepEqual(parseKeyval("a.0.0=x,a.0.1=y,a.1.0=z"), { a: [["x", "y"], ["z"]] });
});

Deno.test("keyval: two spellings of one index: QEMU's hash order picks the winner", () => {
  // Recorded with `--export nbd,...,bitmaps...`: qsd named the bitmap that won.
  assert.deepEqual(parseKeyval("b.0=a,b.00=b").b, ["b"]);
  assert.deepEqual(parseKeyval("b.00=b,b.0=a").b, ["b"]);
  assert.deepEqual(parseKeyval("b.1=goner,b.0=x,b.01=eins,b.2=zwei").b, ["x", "eins", "zwei"]);
  assert.deepEqual(parseKeyval("b.1=eins,b.0=x,b.01=goner").b, ["x", "goner"]);
  assert.deepEqual(parseKeyval("b.0=x,b.1=y,b.001=z").b, ["x", "y"]);
  assert.deepEqual(parseKeyval("b.0=x,b.001=z,b.1=y").b, ["x", "y"]);
  assert.deepEqual(parseKeyval("b.0=x,b.01=z,b.1=y,b.0001=w").b, ["x", "z"]);
});

Deno.test("keyval: the implied key names a first element without '='", () => {
  assert.deepEqual(parseKeyval("an,aus=off,noaus=", "implied"), {
    implied: "an",
    aus: "off",
    noaus: "",
  });
  assert.deepEqual(parseKeyval("val", "eins.zwei"), { eins: { zwei: "val" } });
  assert.deepEqual(parseKeyval("driver=file,filename=x", "driver"), {
    driver: "file",
    filename: "x",
  });
  // The implied value may hold anything but ',' and '=', dots included.
  assert.deepEqual(parseKeyval(".", "driver"), { driver: "." });
  assert.deepEqual(parseKeyval("key.", "driver"), { driver: "key." });
  assert.deepEqual(parseKeyval("help.abc", "driver"), { driver: "help.abc" });
  // Later elements may set the implied key again; the last one wins.
  assert.deepEqual(parseKeyval("file,driver=raw", "driver"), { driver: "raw" });
  assert.deepEqual(parseKeyval("c0", QSD_IMPLIED_KEYS.monitor), { chardev: "c0" });
});

Deno.test("keyval: help requests, where help is offered (--object)", () => {
  assert.deepEqual(parseKeyvalHelp("help", "qom-type"), { tree: {}, help: true });
  assert.deepEqual(parseKeyvalHelp("?", "qom-type"), { tree: {}, help: true });
  assert.deepEqual(parseKeyvalHelp("help"), { tree: {}, help: true });
  assert.deepEqual(parseKeyvalHelp("iothread,help", "qom-type"), {
    tree: { "qom-type": "iothread" },
    help: true,
  });
  assert.deepEqual(parseKeyvalHelp("iothread,id=x,?", "qom-type"), {
    tree: { "qom-type": "iothread", id: "x" },
    help: true,
  });
  assert.deepEqual(parseKeyvalHelp("number=42,help,foo=bar"), {
    tree: { number: "42", foo: "bar" },
    help: true,
  });
  assert.deepEqual(parseKeyvalHelp("help=on"), { tree: { help: "on" }, help: false });
  assert.deepEqual(parseKeyvalHelp("iothread,id=io0", "qom-type"), {
    tree: { "qom-type": "iothread", id: "io0" },
    help: false,
  });
});

Deno.test("keyval: keys that are Object.prototype names are plain members", () => {
  const tree = parseKeyval("constructor=1,toString.x=2,hasOwnProperty.0=3");
  assert.deepEqual(tree, { constructor: "1", toString: { x: "2" }, hasOwnProperty: ["3"] });
  assert.deepEqual(Object.keys(tree), ["constructor", "toString", "hasOwnProperty"]);
});

Deno.test("keyval: members keep the order they were first written in", () => {
  assert.deepEqual(Object.keys(parseKeyval("z=1,a=2,m.x=3,z=4")), ["z", "a", "m"]);
});

Deno.test("keyval: qsd's implied keys and JSON arguments", () => {
  assert.deepEqual(QSD_IMPLIED_KEYS, {
    blockdev: "driver",
    export: "type",
    monitor: "chardev",
    object: "qom-type",
    "nbd-server": undefined,
  });
  assert.equal(isJsonArgument('{"driver":"file"}'), true);
  assert.equal(isJsonArgument(' {"driver":"file"}'), false);
  assert.equal(isJsonArgument("driver=file"), false);
});

// --- The same strings against the real qemu-storage-daemon -----------------

Deno.test({
  name: "keyval: qemu-storage-daemon 7.2 prints the same messages",
  ignore: !qsdAvailable(),
  fn: async () => {
    for (const [text, implied, message] of KEYVAL_ERRORS) {
      const option = implied === undefined ? "--nbd-server" : "--blockdev";
      if (implied !== undefined && implied !== "driver") continue;
      const { code, stderr } = await runQsd(option, text);
      assert.equal(code, 1, `${option} ${text}`);
      assert.equal(stderr, `${QSD}: ${option} ${text}: ${message}\n`);
    }
  },
});

Deno.test("qdictKeys: the member order of what qsd 7.2 sends", () => {
  // Each expectation is the order seen in qsd's QMP output.
  const cases: [string[], string[]][] = [
    [["id", "type", "node-name", "shutting-down"], ["node-name", "shutting-down", "type", "id"]],
    [["version", "capabilities"], ["version", "capabilities"]],
    [["qemu", "package"], ["qemu", "package"]],
    [["major", "minor", "micro"], ["micro", "minor", "major"]],
    [["event", "data", "timestamp"], ["timestamp", "event", "data"]],
    [["seconds", "microseconds"], ["seconds", "microseconds"]],
    [["class", "desc"], ["class", "desc"]],
    [["id", "return"], ["return", "id"]],
    [["writeback", "direct", "no-flush"], ["no-flush", "direct", "writeback"]],
    [
      ["name", "count", "granularity", "recording", "busy", "persistent"],
      ["name", "recording", "persistent", "busy", "granularity", "count"],
    ],
    [["label", "filename", "frontend-open"], ["frontend-open", "filename", "label"]],
    [
      ["filename", "format", "dirty-flag", "actual-size", "virtual-size"],
      ["virtual-size", "filename", "format", "actual-size", "dirty-flag"],
    ],
    [
      [
        "file",
        "node-name",
        "ro",
        "drv",
        "backing_file_depth",
        "encrypted",
        "detect_zeroes",
        "bps",
        "bps_rd",
        "bps_wr",
        "iops",
        "iops_rd",
        "iops_wr",
        "image",
        "cache",
        "write_threshold",
        "dirty-bitmaps",
      ],
      [
        "iops_rd",
        "detect_zeroes",
        "image",
        "iops_wr",
        "ro",
        "node-name",
        "backing_file_depth",
        "drv",
        "iops",
        "bps_wr",
        "write_threshold",
        "dirty-bitmaps",
        "encrypted",
        "bps",
        "bps_rd",
        "cache",
        "file",
      ],
    ],
  ];
  const order = (keys: readonly string[]) => qdictKeys(Object.fromEntries(keys.map((k) => [k, 0])));
  for (const [inserted, sent] of cases) assert.deepEqual(order(inserted), sent);
});
