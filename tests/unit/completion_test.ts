/**
 * The completion model read off denbd's real flag tables and help texts,
 * the help-text reader it stands on, and what the bash and zsh generators
 * make of it (the scripts run in real shells in tests/interop/completion_test.ts).
 */

import assert from "node:assert/strict";
import { DENBD } from "../../main.ts";
import {
  type CommandCompletion,
  completionModel,
  type FlagCompletion,
} from "../../src/cli/completion-model.ts";
import { bashCompletionScript } from "../../src/cli/completion-bash.ts";
import { zshCompletionScript } from "../../src/cli/completion-zsh.ts";
import { positionalsOf, readHelp } from "../../src/cli/help-text.ts";
import type { CommandSuite, Subcommand } from "../../src/cli/subcommand.ts";

const model = completionModel(DENBD);

function command(name: string): CommandCompletion {
  const found = model.commands.find((candidate) => candidate.name === name);
  assert.ok(found, `no command ${name}`);
  return found;
}

function flag(commandName: string, long: string): FlagCompletion | undefined {
  return command(commandName).flags.find((candidate) => candidate.long === long);
}

/** A suite of one command, as another helper might add one. */
function suiteWith(name: string, subcommand: Subcommand): CommandSuite {
  return { ...DENBD, commands: { ...DENBD.commands, [name]: subcommand } };
}

Deno.test("readHelp: every Usage form, the prose paragraphs, no flag lines", () => {
  const help = readHelp(DENBD.commands.info.help());
  assert.equal(help.synopsis.length, 5);
  assert.equal(help.synopsis[0], "denbd info [--json] [--no-content] URI");
  assert.equal(help.synopsis[4], "denbd info -L|--list [--content] [--json] URI");
  assert.ok(help.paragraphs[0][0].startsWith("Describe the export URI names"));
  assert.ok(help.paragraphs.every((paragraph) => !/^\s+-/.test(paragraph[0])));
  assert.match(help.paragraphs.at(-1)![0], /^Exit status/);
});

Deno.test("positionalsOf: flags and their values are not positionals", () => {
  const info = DENBD.commands.info.flags;
  assert.deepEqual(positionalsOf("denbd info --can WHAT | --is WHAT URI", info), [["URI"]]);
  assert.deepEqual(
    positionalsOf("denbd qmp [OPTIONS] SOCKET [COMMAND [JSON | KEY=VALUE ...]]", {}),
    [["SOCKET"], ["COMMAND"], ["JSON", "KEY=VALUE"]],
    "a lone | joins alternatives; ... is no argument",
  );
  assert.deepEqual(positionalsOf("denbd info --map[=CONTEXT] [--totals] URI", info), [["URI"]]);
  assert.deepEqual(
    positionalsOf("denbd qmp [OPTIONS] SOCKET|HOST:PORT [COMMAND [JSON-ARGS]]", {}),
    [["SOCKET", "HOST:PORT"], ["COMMAND"], ["JSON-ARGS"]],
  );
  assert.deepEqual(
    positionalsOf("denbd dump [-n N] [--offset N] URI", DENBD.commands.dump.flags),
    [["URI"]],
  );
});

Deno.test("every subcommand is completed, and the help pseudo-command", () => {
  assert.deepEqual(model.commands.map((c) => c.name), Object.keys(DENBD.commands));
  assert.ok(model.commands.some((c) => c.name === "serve"));
  assert.equal(model.helpCommand, "help");
  assert.deepEqual(model.flags.map((f) => f.long), ["help", "version"]);
});

Deno.test("flag values: choices, suggested values, paths, nothing for free values", () => {
  assert.deepEqual(flag("serve", "cache")?.value, {
    kind: "words",
    words: ["writeback", "writethrough", "none", "directsync", "unsafe"],
  });
  assert.deepEqual(flag("serve", "format")?.value, { kind: "words", words: ["raw", "qcow2"] });
  assert.deepEqual(flag("serve", "socket")?.value, { kind: "files" });
  assert.deepEqual(flag("serve", "pid-file")?.value, { kind: "files" });
  assert.deepEqual(flag("serve", "port")?.value, { kind: "none" });
  assert.equal(flag("serve", "port")?.short, "p");
  assert.equal(flag("serve", "bitmap")?.multiple, true);
  assert.equal(flag("serve", "read-only")?.valueName, undefined, "a switch has no value");
});

Deno.test("flags not built yet are not offered", () => {
  for (const long of ["list", "connect", "disconnect", "trace", "selinux-label"]) {
    assert.ok(DENBD.commands.serve.flags[long]?.notBuilt, `${long} is a notBuilt flag`);
    assert.equal(flag("serve", long), undefined, long);
  }
  assert.ok(flag("info", "content"), "built since");
  assert.equal(flag("info", "no-content")?.value.kind, "none");
});

Deno.test("positionals: files where the synopsis names a path, words, commands", () => {
  assert.deepEqual(command("serve").positionals, [{ name: "FILE", value: { kind: "files" } }]);
  assert.deepEqual(command("copy").positionals.map((p) => p.value.kind), ["files", "files"]);
  assert.deepEqual(command("qmp").positionals.map((p) => p.value.kind), ["files", "none", "none"]);
  assert.deepEqual(command("qmp").positionals[2].name, "JSON-ARGS|KEY=VALUE");
  assert.deepEqual(command("list").positionals, [{ name: "URI", value: { kind: "none" } }]);
  assert.deepEqual(command("completion").positionals[0].value, {
    kind: "words",
    words: ["bash", "zsh"],
  });
  assert.deepEqual(command("man").positionals[0].value, {
    kind: "words",
    words: Object.keys(DENBD.commands),
  });
});

Deno.test("the daemon's options: keyval ones repeatable, --pidfile a file", () => {
  assert.deepEqual(flag("daemon", "pidfile")?.value, { kind: "files" });
  assert.equal(flag("daemon", "blockdev")?.valueName, "OPTIONS");
  assert.equal(flag("daemon", "blockdev")?.multiple, true);
  assert.equal(flag("daemon", "blockdev")?.help, "configure a block node", "first line only");
  assert.equal(flag("daemon", "version")?.short, "V");
  assert.deepEqual(command("daemon").positionals, []);
});

Deno.test("a command added later is completed without regenerating anything", () => {
  const top: Subcommand = {
    summary: "watch the exports",
    run: () => Promise.resolve(0),
    help: () => "Usage: denbd top [OPTIONS] [DIR]",
    flags: {
      interval: { short: "i", value: "SECONDS", help: "refresh every SECONDS" },
      sort: { value: "KEY", help: "sort by KEY", choices: ["name", "bytes"] },
    },
  };
  const suite = suiteWith("top", top);
  const bash = bashCompletionScript(completionModel(suite));
  assert.match(bash, /^ {6}top\) _denbd_top "\$i"; return ;;$/m);
  assert.match(bash, /^ {4}--sort\) _denbd_offer words 'name bytes'; return ;;$/m);
  assert.match(bash, /^ {4}0\) _denbd_offer directories ;;$/m);
  assert.match(bash, /^ {4}_denbd_offer words '--interval --sort -i'$/m);
  const zsh = zshCompletionScript(completionModel(suite));
  assert.match(zsh, /^ {4}'\(-i --interval\)-i\+\[refresh every SECONDS\]:SECONDS: ' \\$/m);
  assert.match(zsh, /^ {4}'\(--sort\)--sort=\[sort by KEY\]:KEY:\(name bytes\)' \\$/m);
  assert.match(zsh, /^ {4}'1:DIR:_files -\/'$/m);
  assert.match(zsh, /'top:watch the exports'/);
});

Deno.test("bash script: the function is registered, quotes survive, notBuilt absent", () => {
  const script = bashCompletionScript(model);
  assert.match(script, /^complete -F _denbd denbd$/m);
  assert.match(script, /^ {4}--cache\) _denbd_offer words 'writeback writethrough/m);
  assert.match(
    script,
    /^ {4}--socket \| -k \| --pid-file \| --qmp\) _denbd_offer files; return ;;$/m,
  );
  assert.doesNotMatch(script, /[' ](--connect|-c|--selinux-label|--disconnect)[' ]/);
});

Deno.test("zsh script: descriptions escape quotes, brackets and colons", () => {
  const suite = suiteWith("odd", {
    summary: "it's odd",
    run: () => Promise.resolve(0),
    help: () => "Usage: denbd odd [OPTIONS]",
    flags: { weird: { value: "A:B", help: "it's [x]: y\\z" } },
  });
  const script = zshCompletionScript(completionModel(suite));
  assert.ok(
    script.includes(`'(--weird)--weird=[it'\\''s \\[x\\]\\: y\\\\z]:A\\:B: '`),
    "quoted and escaped spec",
  );
  assert.ok(script.includes(`'odd:it'\\''s odd'`));
  assert.match(script, /^#compdef denbd$/m);
  assert.match(script, /^ {2}compdef _denbd denbd$/m);
});
