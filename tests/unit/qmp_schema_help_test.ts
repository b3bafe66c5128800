/**
 * Keyval syntax summaries read off QAPI types, and the daemon's --help that
 * is made of them: what the schema holds is what the help shows.
 */
import assert from "node:assert/strict";
import {
  alternate,
  array,
  BUILTIN,
  enumeration,
  member,
  optional,
  type QapiStruct,
  type QapiUnion,
  struct,
  union,
} from "../../src/qmp/schema.ts";
import { keyvalSyntax, wrapSyntax } from "../../src/qmp/schema-help.ts";
import {
  BlockdevOptions,
  BlockExportOptions,
  IMPLEMENTED_DRIVERS,
  NbdServerOptions,
  SERVED_EXPORT_TYPES,
} from "../../src/daemon/qapi-types.ts";
import { daemonCommand } from "../../src/cli/daemon.ts";

const { str, bool, uint32 } = BUILTIN;

const Cache = struct("Cache", [optional("direct", bool)]);
const Driver = enumeration("Driver", ["file", "null", "qcow2", "vvfat"]);

/** A small BlockdevOptions: `branches` for the drivers it models, vvfat unmodelled. */
function testBlockdev(branches: Record<string, QapiStruct>): QapiUnion {
  return union(
    "TestBlockdev",
    [member("driver", Driver), optional("node-name", str), optional("cache", Cache)],
    "driver",
    branches,
    ["vvfat"],
  );
}

const FILE_BRANCH = struct("File", [member("filename", str)]);

Deno.test("schema help: a union has one form per modelled value, the implied key first", () => {
  assert.deepEqual(keyvalSyntax(testBlockdev({ file: FILE_BRANCH }), { impliedKey: "driver" }), [
    ["[driver=]file", ",filename=<str>", "[,node-name=<str>]", "[,cache.direct=on|off]"],
    // A value without a branch that is not unmodelled takes the base members only.
    ["[driver=]null", "[,node-name=<str>]", "[,cache.direct=on|off]"],
    ["[driver=]qcow2", "[,node-name=<str>]", "[,cache.direct=on|off]"],
  ]);
});

Deno.test("schema help: a branch added to the schema shows up with its members", () => {
  const before = keyvalSyntax(testBlockdev({ file: FILE_BRANCH }), { impliedKey: "driver" });
  const qcow2 = struct("Qcow2", [member("file", str), optional("backing", str)]);
  const after = keyvalSyntax(testBlockdev({ file: FILE_BRANCH, qcow2 }), {
    impliedKey: "driver",
  });
  assert.deepEqual(after[0], before[0]);
  assert.deepEqual(after[2], [
    "[driver=]qcow2",
    ",file=<str>",
    "[,node-name=<str>]",
    "[,cache.direct=on|off]",
    "[,backing=<str>]",
  ]);
  // A branch shows even for a value still listed as unmodelled.
  const vvfat = struct("Vvfat", [member("dir", str)]);
  const withVvfat = keyvalSyntax(testBlockdev({ vvfat }), { impliedKey: "driver" });
  assert.deepEqual(withVvfat.map((form) => form[0]), [
    "[driver=]file",
    "[driver=]null",
    "[driver=]qcow2",
    "[driver=]vvfat",
  ]);
});

Deno.test("schema help: only picks the values shown, in the schema's order", () => {
  const forms = keyvalSyntax(testBlockdev({ file: FILE_BRANCH }), {
    impliedKey: "driver",
    only: ["qcow2", "file", "vvfat", "bogus"],
  });
  assert.deepEqual(forms.map((form) => form[0]), ["[driver=]file", "[driver=]qcow2"]);
});

Deno.test("schema help: placeholders of scalars, lists, alternates and nested unions", () => {
  const Address = union("Address", [member("type", enumeration("T", ["inet", "unix"]))], "type", {
    inet: struct("Inet", [member("host", str), member("port", str)]),
    unix: struct("Unix", [member("path", str)]),
  });
  const Ref = alternate("Ref", [testBlockdev({}), str]);
  const Options = struct("Options", [
    member("addr", Address),
    optional("max", uint32),
    optional("mode", enumeration("Mode", ["safe", "hard"])),
    optional("names", array(str)),
    optional("pairs", array(struct("Pair", [member("a", str), optional("b", bool)]))),
    optional("ref", Ref),
  ]);
  const tail = [
    "[,max=<uint32>]",
    "[,mode=safe|hard]",
    "[,names.N=<str>]",
    "[,pairs.N.a=<str>]",
    "[,pairs.N.b=on|off]",
    "[,ref=<str>|ref.*=<TestBlockdev>]",
  ];
  assert.deepEqual(keyvalSyntax(Options), [
    ["addr.type=inet", ",addr.host=<str>", ",addr.port=<str>", ...tail],
    ["addr.type=unix", ",addr.path=<str>", ...tail],
  ]);
});

Deno.test("schema help: a struct with an implied key", () => {
  const Monitor = struct("Monitor", [optional("pretty", bool), member("chardev", str)]);
  assert.deepEqual(keyvalSyntax(Monitor, { impliedKey: "chardev" }), [
    ["[chardev=]<str>", "[,pretty=on|off]"],
  ]);
});

Deno.test("schema help: lines break between pieces, never inside one", () => {
  const form = ["[driver=]file", ",filename=<str>", "[,node-name=<str>]", "[,x=on|off]"];
  assert.deepEqual(wrapSyntax(form, 30), [
    "[driver=]file,filename=<str>",
    "[,node-name=<str>][,x=on|off]",
  ]);
  assert.deepEqual(wrapSyntax(form, 5), form);
  assert.deepEqual(wrapSyntax(form, 1000), [form.join("")]);
  assert.deepEqual(wrapSyntax([], 10), []);
});

/** The lines of `denbd daemon --help` that describe `--option`. */
function helpSection(option: string): string {
  const lines = daemonCommand.help().split("\n");
  const start = lines.findIndex((line) => line.trimStart().startsWith(`--${option} `));
  assert.ok(start >= 0, `--help has --${option}`);
  let end = start + 1;
  while (end < lines.length && lines[end].startsWith(" ".repeat(22))) end++;
  return lines.slice(start, end).join("\n");
}

/** The keys a --help section shows, with their dotted paths (`cache.direct`). */
function helpKeys(section: string): Set<string> {
  return new Set([...section.matchAll(/([A-Za-z][A-Za-z0-9_.*-]*)=/g)].map((match) => match[1]));
}

/** The member `name` is among `keys`, itself or by the keys of its members or elements. */
function shows(keys: Set<string>, name: string): boolean {
  return keys.has(name) || [...keys].some((key) => key.startsWith(`${name}.`));
}

function memberNames(type: QapiStruct | QapiUnion, value?: string): string[] {
  if (type.kind === "struct") return type.members.map((m) => m.name);
  return [...type.base, ...(value ? type.branches[value].members : [])].map((m) => m.name);
}

Deno.test("daemon --help: each implemented driver with each of its members", () => {
  const section = helpSection("blockdev");
  const keys = helpKeys(section);
  for (const driver of IMPLEMENTED_DRIVERS) {
    assert.ok(section.includes(`[driver=]${driver},`), `--blockdev ${driver}`);
    for (const name of memberNames(BlockdevOptions as QapiUnion, driver)) {
      assert.ok(shows(keys, name), `${driver}: ${name}`);
    }
  }
});

Deno.test("daemon --help: the served export types with every member, the NBD server's too", () => {
  const exportSection = helpSection("export");
  const exportTypes = [...exportSection.matchAll(/\[type=\]([a-z-]+)/g)].map((match) => match[1]);
  assert.deepEqual(exportTypes, SERVED_EXPORT_TYPES);
  const exportKeys = helpKeys(exportSection);
  for (const name of memberNames(BlockExportOptions as QapiUnion, "nbd")) {
    assert.ok(shows(exportKeys, name), `--export nbd: ${name}`);
  }
  const serverSection = helpSection("nbd-server");
  const serverKeys = helpKeys(serverSection);
  for (const name of memberNames(NbdServerOptions as QapiStruct)) {
    assert.ok(shows(serverKeys, name), `--nbd-server: ${name}`);
  }
  assert.match(serverSection, /addr\.type=inet,addr\.host=<str>,addr\.port=<str>/);
  assert.match(serverSection, /addr\.type=unix,addr\.path=<str>/);
});
