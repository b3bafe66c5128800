/**
 * `denbd completion` and `denbd man` in the real tools: the bash script
 * completing in bash (with bash-completion loaded, and without it), the zsh
 * script completing in an interactive zsh driven through zsh/zpty with
 * compinit (the completion widget runs, a `compadd` wrapper reports each
 * match), and every man page rendered by groff with all warnings on and
 * shown by `man -l`.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { DENBD } from "../../main.ts";
import { denbdCommand, needs, ROOT, run, withTempDir } from "./harness.ts";

/** bash-completion's loader, as Debian installs it. */
const BASH_COMPLETION = "/usr/share/bash-completion/bash_completion";

/** A directory (in `dir`) of the files path completions are checked against, the shells' cwd. */
async function makeFiles(dir: string): Promise<string> {
  const files = join(dir, "files");
  await Deno.mkdir(join(files, "sub"), { recursive: true });
  await Deno.writeTextFile(join(files, "disk.img"), "");
  await Deno.writeTextFile(join(files, "other.qcow2"), "");
  return files;
}

/** What `denbd ARGS` prints (exit 0 required). */
async function denbd(...args: string[]): Promise<string> {
  const [command, prefix] = denbdCommand();
  const result = await run(command, [...prefix, ...args]);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout;
}

/** `text` as one single-quoted shell word. */
function quoted(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/** Parse "=LINE" headers each followed by the offers for LINE, sorted. */
function offersByLine(output: string): Map<string, string[]> {
  const offers = new Map<string, string[]>();
  let current: string[] = [];
  for (const line of output.split("\n")) {
    if (line.startsWith("=")) offers.set(line.slice(1), current = []);
    else if (line !== "") current.push(line);
  }
  for (const list of offers.values()) list.sort();
  return offers;
}

/**
 * What the bash completion function offers for each of `lines` (the words,
 * the last being completed), run in `dir` with bash-completion loaded or not.
 */
async function bashOffers(
  dir: string,
  files: string,
  lines: readonly (readonly string[])[],
  withBashCompletion: boolean,
): Promise<Map<string, string[]>> {
  await Deno.writeTextFile(join(dir, "denbd.bash"), await denbd("completion", "bash"));
  const driver = [
    withBashCompletion ? `source ${BASH_COMPLETION}` : "",
    `source ${quoted(join(dir, "denbd.bash"))}`,
    `declare -F _filedir >/dev/null && echo "=_filedir"`,
    "offer() {",
    '  COMP_WORDS=("$@") COMP_CWORD=$(($# - 1)) COMP_LINE="$*" COMPREPLY=()',
    "  COMP_POINT=${#COMP_LINE}",
    "  _denbd",
    "  printf '=%s\\n' \"$*\"",
    "  printf '%s\\n' \"${COMPREPLY[@]}\"",
    "}",
    ...lines.map((words) => `offer ${words.map(quoted).join(" ")}`),
  ].join("\n");
  const result = await run("bash", ["--norc", "--noprofile", "-c", driver], { cwd: files });
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stderr, "");
  const offers = offersByLine(result.stdout);
  assert.equal(offers.has("_filedir"), withBashCompletion, "bash-completion loaded or not");
  return offers;
}

/** Lines to complete and what bash and zsh must offer for each (sorted). */
const COMMANDS = [...Object.keys(DENBD.commands), "help"].sort();
const CACHE_MODES = ["directsync", "none", "unsafe", "writeback", "writethrough"];
const FILES = ["disk.img", "other.qcow2", "sub"];

Deno.test("bash completes commands, flags, choices and files", needs("bash"), async () => {
  assert.ok(await Deno.stat(BASH_COMPLETION).then(() => true, () => false), BASH_COMPLETION);
  await withTempDir(async (dir) => {
    const files = await makeFiles(dir);
    const lines = [
      ["denbd", ""],
      ["denbd", "se"],
      ["denbd", "-"],
      ["denbd", "serve", "--"],
      ["denbd", "serve", "--cache", ""],
      ["denbd", "serve", "--cache", "=", "w"],
      ["denbd", "serve", "-f", ""],
      ["denbd", "serve", "--format", "=", ""],
      ["denbd", "serve", "--port", ""],
      ["denbd", "serve", "--socket", ""],
      ["denbd", "serve", "d"],
      ["denbd", "serve", "-p", "10809", "--read-only", "o"],
      ["denbd", "serve", "disk.img", ""],
      ["denbd", "copy", "disk.img", "o"],
      ["denbd", "copy", "disk.img", "other.qcow2", ""],
      ["denbd", "list", ""],
      ["denbd", "qmp", "d"],
      ["denbd", "daemon", "--pidfile", "d"],
      ["denbd", "completion", ""],
      ["denbd", "help", "d"],
      ["denbd", "man", "s"],
    ];
    for (const withBashCompletion of [true, false]) {
      const offers = await bashOffers(dir, files, lines, withBashCompletion);
      const offered = (line: string) => offers.get(line);
      assert.deepEqual(offered("denbd "), COMMANDS);
      assert.deepEqual(offered("denbd se"), ["serve"]);
      assert.deepEqual(offered("denbd -"), ["--help", "--version", "-V", "-h"]);
      const serveFlags = offered("denbd serve --")!;
      for (const long of ["--cache", "--port", "--socket", "--read-only", "--format"]) {
        assert.ok(serveFlags.includes(long), long);
      }
      assert.ok(!serveFlags.includes("--connect"), "flags not built are not offered");
      assert.deepEqual(offered("denbd serve --cache "), CACHE_MODES);
      assert.deepEqual(offered("denbd serve --cache = w"), ["writeback", "writethrough"]);
      assert.deepEqual(offered("denbd serve -f "), ["qcow2", "raw"]);
      assert.deepEqual(offered("denbd serve --format = "), ["qcow2", "raw"]);
      assert.deepEqual(offered("denbd serve --port "), [], "a port is not a file");
      assert.deepEqual(offered("denbd serve --socket "), FILES);
      assert.deepEqual(offered("denbd serve d"), ["disk.img"]);
      assert.deepEqual(offered("denbd serve -p 10809 --read-only o"), ["other.qcow2"]);
      assert.deepEqual(offered("denbd serve disk.img "), [], "serve takes one FILE");
      assert.deepEqual(offered("denbd copy disk.img o"), ["other.qcow2"]);
      assert.deepEqual(offered("denbd copy disk.img other.qcow2 "), []);
      assert.deepEqual(offered("denbd list "), [], "a URI is not a file");
      assert.deepEqual(offered("denbd qmp d"), ["disk.img"], "SOCKET|HOST:PORT");
      assert.deepEqual(offered("denbd daemon --pidfile d"), ["disk.img"]);
      assert.deepEqual(offered("denbd completion "), ["bash", "zsh"]);
      assert.deepEqual(offered("denbd help d"), ["daemon", "dump"]);
      assert.deepEqual(offered("denbd man s"), ["serve"]);
    }
  });
});

/**
 * A zsh script printing, for each LINE argument after the fpath directory,
 * "=LINE" then every match the completion system adds when Tab is pressed
 * after LINE in an interactive zsh (zsh/zpty) with compinit.
 */
const ZSH_DRIVER = `
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PROMPT=''; fpath=(\${(q)1} \\$fpath); autoload -Uz compinit; compinit -u -D"
zpty -w z 'compadd() { if [[ \${@[1,(i)(-|--)]} == *-(O|A|D)\\ * ]]; then builtin compadd "$@"; return; fi; local -a hits; builtin compadd -A hits "$@"; local hit; for hit in $hits; do print -r -- "<MA""TCH>$hit"; done; }'
zpty -w z 'complete-and-mark() { zle complete-word; print -r -- "<E""ND>" }; zle -N complete-and-mark; bindkey "^I" complete-and-mark'
local request line deadline=$(( SECONDS + 50 ))
for request in \${@[2,-1]}; do
  print -r -- "=$request"
  zpty -n -w z "$request"$'\\t'
  while (( SECONDS < deadline )); do
    zpty -r -t z line || continue
    [[ $line == *'<END>'* ]] && break
    [[ $line == *'<MATCH>'* ]] && print -r -- \${\${line##*<MATCH>}%%$'\\r'*}
  done
  (( SECONDS < deadline )) || { print -u2 "timed out completing $request"; exit 1 }
  zpty -n -w z $'\\C-u'
done
zpty -d z
`;

Deno.test("zsh completes commands, flags, choices and files", needs("zsh"), async () => {
  await withTempDir(async (dir) => {
    const files = await makeFiles(dir);
    const functions = join(dir, "functions");
    await Deno.mkdir(functions);
    await Deno.writeTextFile(join(functions, "_denbd"), await denbd("completion", "zsh"));
    const syntax = await run("zsh", ["-n", join(functions, "_denbd")]);
    assert.equal(syntax.code, 0, syntax.stderr);
    await Deno.writeTextFile(join(dir, "driver.zsh"), ZSH_DRIVER);
    const lines = [
      "denbd ",
      "denbd serve --ca",
      "denbd serve --cache=",
      "denbd serve -f ",
      "denbd serve --port ",
      "denbd serve ",
      "denbd copy disk.img o",
      "denbd daemon --pidfile ",
      "denbd completion ",
      "denbd help d",
    ];
    const driver = join(dir, "driver.zsh");
    const result = await run("zsh", ["-f", driver, functions, ...lines], { cwd: files });
    assert.equal(result.code, 0, result.stderr);
    const offered = (line: string) => offersByLine(result.stdout).get(line);
    assert.deepEqual(offered("denbd "), COMMANDS);
    assert.deepEqual(offered("denbd serve --ca"), ["--cache"]);
    assert.deepEqual(offered("denbd serve --cache="), CACHE_MODES);
    assert.deepEqual(offered("denbd serve -f "), ["qcow2", "raw"]);
    assert.deepEqual(offered("denbd serve --port "), []);
    assert.deepEqual(offered("denbd serve "), FILES);
    assert.deepEqual(offered("denbd copy disk.img o"), ["other.qcow2"]);
    assert.deepEqual(offered("denbd daemon --pidfile "), FILES);
    assert.deepEqual(offered("denbd completion "), ["bash", "zsh"]);
    assert.deepEqual(offered("denbd help d"), ["daemon", "dump"]);
  });
});

Deno.test(
  "every man page renders without a groff warning and shows in man",
  needs("groff", "man"),
  async () => {
    await withTempDir(async (dir) => {
      const written = await run(Deno.execPath(), [
        "run",
        "--allow-read",
        "--allow-write",
        join(ROOT, "scripts", "man.ts"),
        dir,
      ]);
      assert.equal(written.code, 0, written.stderr);
      const pages = [
        ["denbd", DENBD.flags],
        ...Object.entries(DENBD.commands).map((
          [name, command],
        ) => [`denbd-${name}`, command.flags] as const),
      ] as const;
      for (const [page, flags] of pages) {
        const file = join(dir, "man1", `${page}.1`);
        for (const width of ["80n", "65n"]) {
          const rendered = await run("groff", [
            "-man",
            "-Tutf8",
            "-ww",
            `-rLL=${width}`,
            "-z",
            file,
          ]);
          assert.equal(rendered.code, 0, `${page}: ${rendered.stderr}`);
          assert.equal(rendered.stderr, "", `${page} at ${width}: groff warns`);
        }
        const shown = await run("man", ["-l", file]);
        assert.equal(shown.code, 0, shown.stderr);
        assert.match(shown.stdout, new RegExp(`^NAME\\n +${page} +- +\\S`, "m"), page);
        for (const section of ["SYNOPSIS", "DESCRIPTION", "OPTIONS", "SEE ALSO"]) {
          assert.match(shown.stdout, new RegExp(`^${section}$`, "m"), `${page}: ${section}`);
        }
        for (const long of Object.keys(flags)) {
          assert.match(
            shown.stdout,
            new RegExp(`^ +(-\\w, )?--${long}\\b`, "m"),
            `${page} --${long}`,
          );
        }
      }
      assert.equal(
        await denbd("man", "serve"),
        await Deno.readTextFile(join(dir, "man1", "denbd-serve.1")),
      );
      const peers = new Set<string>();
      for (const [page] of pages) {
        const source = await Deno.readTextFile(join(dir, "man1", `${page}.1`));
        for (const [, name, section] of source.matchAll(/^\.BR \\%(\S+) \((\d)\),?$/gm)) {
          if (!name.startsWith("denbd")) peers.add(`${section} ${name.replaceAll("\\-", "-")}`);
        }
      }
      assert.ok(peers.has("8 qemu-nbd") && peers.has("1 nbdcopy"), [...peers].join(", "));
      for (const peer of peers) {
        const found = await run("man", ["-w", ...peer.split(" ")]);
        assert.equal(found.code, 0, `SEE ALSO ${peer}: no such man page here`);
      }
    });
  },
);

Deno.test("completion and man refuse what they do not know, as usage errors", async () => {
  const [command, prefix] = denbdCommand();
  const fish = await run(command, [...prefix, "completion", "fish"]);
  assert.equal(fish.code, 1);
  assert.match(fish.stderr, /^denbd completion: unknown shell 'fish' \(expected bash or zsh\)\n/);
  const typo = await run(command, [...prefix, "man", "srve"]);
  assert.equal(typo.code, 1);
  assert.match(typo.stderr, /^denbd man: unknown subcommand 'srve'; did you mean 'serve'\?\n/);
  assert.equal(typo.stdout, "");
  const inherited = await run(command, [...prefix, "man", "constructor"]);
  assert.equal(inherited.code, 1);
  assert.match(inherited.stderr, /^denbd man: unknown subcommand 'constructor'\n/);
  const member = await run(command, [...prefix, "completion", "toString"]);
  assert.equal(member.code, 1);
  assert.match(member.stderr, /^denbd completion: unknown shell 'toString'/);
});
