/**
 * The man page generator: troff escaping, the sections of a subcommand's
 * page and of denbd(1), taken from help texts and flag tables (rendered by
 * groff and man in tests/interop/completion_test.ts).
 */

import assert from "node:assert/strict";
import { DENBD } from "../../main.ts";
import { commandManPage, manPages, programManPage } from "../../src/cli/man-page.ts";
import type { Subcommand } from "../../src/cli/subcommand.ts";
import { bold, escapeTroff, italic, textLine } from "../../src/cli/troff.ts";
import { flagTableOfOptions } from "../../src/cli/daemon-flags.ts";

/** The section names of `page`, in order. */
function sections(page: string): string[] {
  return [...page.matchAll(/^\.SH (.*)$/gm)].map((match) => match[1]);
}

const EXAMPLE_COMMAND: Subcommand = {
  summary: "watch an export (like nbdinfo, but live)",
  run: () => Promise.resolve(0),
  help: () =>
    [
      "Usage: denbd watch [OPTIONS] URI",
      "       denbd watch --once URI",
      "       denbd watch -O|--sort KEY bytes|name URI",
      "Watch the export URI names.",
      ".dots and 'quotes' at the start of a line, a \\backslash, café.",
      "",
      "  -o, --once        look once",
      "      --sort=KEY    sort",
      "",
      "It redraws every second. Example:",
      "  denbd watch nbd://localhost/disk",
      "Stop it with Ctrl-C; qemu-nbd(8) serves what it watches.",
    ].join("\n"),
  flags: {
    once: { short: "o", help: "look once" },
    sort: { value: "KEY", help: "sort", choices: ["name", "bytes"], default: "name" },
    tag: { value: "TAG", help: "a tag", multiple: true },
    frobnicate: { help: "frobnicate", notBuilt: "nobody frobnicates" },
  },
};

Deno.test("troff escaping: backslashes, hyphens, requests at line start, non-ASCII", () => {
  assert.equal(escapeTroff("a\\b-c"), "a\\eb\\-c");
  assert.equal(textLine(".TH not a request"), "\\&.TH not a request");
  assert.equal(textLine("'br not a request"), "\\&'br not a request");
  assert.equal(textLine("a .b"), "a .b", "a dot inside a line stays");
  assert.equal(escapeTroff("café — ok"), "caf\\[u00E9] \\[u2014] ok");
  assert.equal(bold("--x"), "\\fB\\-\\-x\\fR");
  assert.equal(italic("FILE"), "\\fIFILE\\fR");
});

Deno.test("troff escaping: break points in long unspaced words only", () => {
  const long = "driver=qcow2,file.filename=disk.qcow2,read-only=on|off";
  assert.equal(escapeTroff(long).split("\\:").length, 4);
  assert.equal(escapeTroff("a,b|c"), "a,b|c");
});

Deno.test("a subcommand's page: sections in order, from its help and its table", () => {
  const page = commandManPage("denbd", "9.9", "watch", EXAMPLE_COMMAND);
  assert.deepEqual(sections(page), [
    "NAME",
    "SYNOPSIS",
    "DESCRIPTION",
    "OPTIONS",
    "EXAMPLES",
    "SEE ALSO",
  ]);
  assert.match(page, /^\.TH DENBD\\-WATCH 1 "" "denbd 9\.9" "User Commands"$/m);
  assert.match(page, /^denbd\\-watch \\- watch an export \(like nbdinfo, but live\)$/m);
  assert.match(page, /^\\fBdenbd watch\\fR \[\\fIOPTIONS\\fR\] \\fIURI\\fR$/m);
  assert.match(page, /^\\fBdenbd watch\\fR \\fB\\-\\-once\\fR \\fIURI\\fR$/m);
  assert.ok(
    page.includes(
      "\\fBdenbd watch\\fR \\fB\\-O\\fR|\\fB\\-\\-sort\\fR \\fIKEY\\fR \\fBbytes\\fR|\\fBname\\fR \\fIURI\\fR\n",
    ),
    "flags and literal words bold, placeholders italic",
  );
});

Deno.test("a subcommand's page: the description is the prose, escaped", () => {
  const page = commandManPage("denbd", "9.9", "watch", EXAMPLE_COMMAND);
  const description = page.split(".SH DESCRIPTION\n")[1].split(".SH OPTIONS")[0];
  assert.match(description, /^\\&\.dots and 'quotes' at the start of a line, a \\ebackslash/m);
  assert.match(description, /^It redraws every second\.$/m, "'Example:' goes with its lines");
  assert.doesNotMatch(description, /look once|denbd watch nbd/, "no flag or example lines");
  assert.match(description, /^Stop it with Ctrl\\-C/m);
});

Deno.test("a subcommand's page: options with values, choices, defaults, notes", () => {
  const page = commandManPage("denbd", "9.9", "watch", EXAMPLE_COMMAND);
  assert.match(page, /^\.TP\n\\fB\\-o\\fR, \\fB\\-\\-once\\fR\nlook once$/m);
  assert.match(
    page,
    /^\.TP\n\\fB\\-\\-sort\\fR=\\fIKEY\\fR\nsort \(one of name, bytes; default 'name'\)$/m,
  );
  assert.match(page, /^a tag \(may be repeated\)$/m);
  assert.match(page, /^frobnicate \(not supported yet: nobody frobnicates\)$/m);
});

Deno.test("a subcommand's page: examples, and the peers its help names", () => {
  const page = commandManPage("denbd", "9.9", "watch", EXAMPLE_COMMAND);
  assert.match(
    page,
    /^\.SH EXAMPLES\n\.RS\n\.nf\ndenbd watch nbd:\/\/localhost\/disk\n\.fi\n\.RE$/m,
  );
  assert.match(page, /^\.SH SEE ALSO\n\.BR \\%denbd \(1\),\n\.BR \\%qemu\\-nbd \(8\),\n/m);
  assert.match(page, /^\.BR \\%nbdinfo \(1\)$/m, "the last entry has no comma");
});

Deno.test("the daemon's page shows each keyval form unfilled under its option", () => {
  const page = commandManPage("denbd", "9.9", "daemon", DENBD.commands.daemon);
  const blockdev = page.split("\\fB\\-\\-blockdev\\fR=\\fIOPTIONS\\fR\n")[1].split(".TP")[0];
  assert.match(blockdev, /^configure a block node \(may be repeated\)\n\.nf\n\[driver=\]file,/);
  assert.match(blockdev, /^\[driver=\]qcow2,/m);
  assert.match(blockdev, /^\[driver=\]raw,/m);
  assert.match(blockdev, /^ {2}\[,/m, "wrapped lines stay indented");
  assert.match(page, /^\.BR \\%qemu\\-storage\\-daemon \(1\)/m);
});

Deno.test("the daemon's options as a flag table", () => {
  const table = flagTableOfOptions({
    help: { short: "h", argument: false, early: true, help: "display this help and exit" },
    object: {
      argument: true,
      early: false,
      syntax: [["[qom-type=]TYPE", ",id=ID"]],
      help: "create an object;\n'help' lists the types",
    },
  });
  assert.deepEqual(table.help, { short: "h", help: "display this help and exit" });
  assert.deepEqual(table.object, {
    value: "OPTIONS",
    help: "create an object; 'help' lists the types\n  [qom-type=]TYPE,id=ID",
    multiple: true,
  });
});

Deno.test("denbd(1): the command list from the suite, each pointing to its page", () => {
  const page = programManPage(DENBD, "9.9");
  assert.deepEqual(sections(page), [
    "NAME",
    "SYNOPSIS",
    "DESCRIPTION",
    "COMMANDS",
    "OPTIONS",
    "SEE ALSO",
  ]);
  assert.match(page, /^denbd \\- an NBD server, storage daemon and client toolkit/m);
  for (const [name, command] of Object.entries(DENBD.commands)) {
    assert.ok(page.includes(`.TP\n\\fB${name}\\fR\n`), name);
    assert.ok(page.includes(`\\%\\fBdenbd\\-${name}\\fR(1).`), name);
    assert.ok(page.includes(`.BR \\%denbd\\-${name} (1)`), name);
    assert.ok(page.includes(escapeTroff(command.summary)), name);
  }
  const description = page.split(".SH DESCRIPTION\n")[1].split(".SH COMMANDS")[0];
  assert.doesNotMatch(description, /Commands:/, "the help's listing is replaced by COMMANDS");
  assert.match(page, /^\\fB\\-V\\fR, \\fB\\-\\-version\\fR$/m);
});

Deno.test("manPages: denbd.1 and one page per subcommand", () => {
  const pages = manPages(DENBD, "9.9");
  assert.deepEqual(
    [...pages.keys()],
    ["denbd.1", ...Object.keys(DENBD.commands).map((name) => `denbd-${name}.1`)],
  );
  for (const [file, page] of pages) {
    assert.match(page, /^\.\\" Generated by 'denbd( man \w+)?'; do not edit\.\n\.TH /, file);
  }
});
