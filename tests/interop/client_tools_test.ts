/**
 * `denbd list`, `info`, `map` and `dump` against real servers (qemu-nbd,
 * qemu-storage-daemon, nbdkit, nbd-server and denbd serve), each compared
 * in the same test with what libnbd's nbdinfo and nbddump print for the
 * same server: standard output byte for byte, and the exit status.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  check,
  type CommandResult,
  denbdCommand,
  makeSparseImage,
  needs,
  run,
  type ServerProcess,
  startDenbd,
  startQemuNbd,
  withServer,
  withStarted,
  withTempDir,
} from "./harness.ts";
import { startNbdkit, startNbdServer, startQemuStorageDaemon } from "./peers.ts";
import { NBD_FLAG, NBD_HANDSHAKE_FLAG, NBD_OPT, NBD_REP } from "../../src/nbd/protocol.ts";
import {
  decodeOptionHeader,
  encodeExportNameReply,
  encodeGreeting,
  encodeOptionReply,
  encodeRepServer,
} from "../../src/nbd/wire.ts";

const MiB = 1024 * 1024;
const REGIONS = [[0, 65536], [3 * MiB, 8192], [7 * MiB, 512 * 1024]] as const;

/** Run `denbd ARGS...` from source. */
function denbd(...args: string[]): Promise<CommandResult> {
  const [deno, prefix] = denbdCommand();
  return run(deno, [...prefix, ...args]);
}

/** A denbd command line and the libnbd tool's command line that must print the same. */
type Comparison = readonly [denbdArgs: string[], reference: string[]];

/**
 * Run each comparison; stdout and exit status must be identical, JSON must
 * parse. The reference must succeed (exit 0, or 2 for a --can answer) unless
 * `referenceFails`, so that two failures never pass for agreement.
 */
async function compare(comparisons: readonly Comparison[], referenceFails = false): Promise<void> {
  for (const [ours, [tool, ...args]] of comparisons) {
    const [mine, theirs] = [await denbd(...ours), await run(tool, args)];
    const what = `denbd ${ours.join(" ")} vs ${tool} ${args.join(" ")}`;
    assert.equal(theirs.code === 1, referenceFails, `${what}: ${tool} exited ${theirs.code}`);
    assert.equal(mine.code, theirs.code, `${what}: exit status\n${mine.stderr}${theirs.stderr}`);
    assert.equal(mine.stdout, theirs.stdout, `${what}: output\n${mine.stderr}`);
    if (ours.includes("--json") && theirs.code === 0) JSON.parse(mine.stdout);
  }
}

/** info and list, as text and JSON, and --size. */
function describing(uri: string): Comparison[] {
  return [
    [["info", uri], ["nbdinfo", uri]],
    [["info", "--json", uri], ["nbdinfo", "--json", uri]],
    [["info", "--no-content", uri], ["nbdinfo", "--no-content", uri]],
    [["list", uri], ["nbdinfo", "--list", uri]],
    [["list", "--json", uri], ["nbdinfo", "--list", "--json", uri]],
    [["info", "--size", uri], ["nbdinfo", "--size", uri]],
  ];
}

/** map of `context`: lines, totals, and both as JSON. */
function mapping(uri: string, context = "base:allocation"): Comparison[] {
  return [[], ["--totals"], ["--json"], ["--totals", "--json"]].map((flags) => [
    ["map", "--context", context, ...flags, uri],
    ["nbdinfo", `--map=${context}`, ...flags, uri],
  ]);
}

/** nbdinfo's own spellings of a map and a list, with denbd info in its place. */
function asNbdinfo(uri: string): Comparison[] {
  return [
    [],
    ["--json"],
    ["--content", "-L"],
    ["--content", "--list", "--json"],
    ["--content", "--size"],
    ["--content", "--map"],
    ["--content", "--can", "write"],
    ["--map"],
    ["--map=qemu:allocation-depth"],
    ["--map", "--totals"],
    ["--map", "--json"],
    ["--map=qemu:allocation-depth", "--totals", "--json"],
    ["-L"],
    ["--list", "--json"],
    ["--no-content"],
  ].map((flags) => [["info", ...flags, uri], ["nbdinfo", ...flags, uri]]);
}

/** dump of the whole export and of its first bytes. */
function dumping(uri: string, lengths: readonly number[] = [40, MiB + 4]): Comparison[] {
  return [
    [["dump", uri], ["nbddump", uri]],
    ...lengths.map((
      n,
    ): Comparison => [["dump", "-n", String(n), uri], ["nbddump", "-n", `${n}`, uri]]),
  ];
}

/** --can/--is questions (exit status 0 or 2). */
function asking(uri: string, questions: readonly string[]): Comparison[] {
  return questions.map((question) => [
    ["info", "--can", question, uri],
    ["nbdinfo", "--can", question, uri],
  ]);
}

Deno.test(
  "qemu-nbd -A (raw): info, list, map of both contexts, dump, --can",
  needs("nbdinfo", "nbddump", "qemu-nbd"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 8 * MiB, REGIONS);
      const name = "a b:c/d?é";
      const args = ["-t", "-A", "-f", "raw", "-x", name, "-D", 'the "disk"\tone', image];
      await withServer(startQemuNbd, { args, exportName: name }, async (server) => {
        await compare([
          ...describing(server.uri),
          ...mapping(server.uri),
          ...mapping(server.uri, "qemu:allocation-depth"),
          ...asNbdinfo(server.uri),
          ...dumping(server.uri),
          ...asking(server.uri, ["write", "read-only", "fast-zero", "multi-conn", "sr", "tls"]),
        ]);
        const totalsAlone = await denbd("info", "--totals", server.uri);
        assert.equal(totalsAlone.code, 1);
        assert.match(totalsAlone.stderr, /you must use --totals only with --map option/);
        const both = ["--content", "--no-content", server.uri];
        await compare([[["info", ...both], ["nbdinfo", ...both]]], true);
        const info = await denbd("info", server.uri);
        assert.match(info.stdout, /\tcontexts:\n\t\tbase:allocation\n\t\tqemu:allocation-depth\n/);
      });
    });
  },
);

Deno.test(
  "qemu-nbd -A on qcow2 over a backing file: allocation depth 2",
  needs("nbdinfo", "nbddump", "qemu-nbd", "qemu-img", "qemu-io"),
  async () => {
    await withTempDir(async (dir) => {
      const base = join(dir, "base.raw");
      const top = join(dir, "top.qcow2");
      await makeSparseImage(base, 4 * MiB, [[65536, 4096]]);
      await check("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", top, "8M"]);
      await check("qemu-io", ["-c", "write -P 0x41 1M 64k", "-c", "write -z 2M 64k", top]);
      const args = ["-t", "-r", "-A", "-f", "qcow2", top];
      await withServer(startQemuNbd, { args }, async (server) => {
        await compare([
          ...mapping(server.uri, "qemu:allocation-depth"),
          ...mapping(server.uri),
          ...dumping(server.uri, [65540]),
          [["info", server.uri], ["nbdinfo", server.uri]],
        ]);
        const depth = await denbd("map", "--context", "qemu:allocation-depth", server.uri);
        assert.match(depth.stdout, / {2}backing depth 2\n/);
        assert.match(depth.stdout, / {2}local\n/);
      });
    });
  },
);

Deno.test(
  "qemu-storage-daemon with allocation-depth",
  needs("nbdinfo", "nbddump", "qemu-storage-daemon"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 8 * MiB, REGIONS);
      await withStarted(
        () => startQemuStorageDaemon(image, { allocationDepth: true }),
        (server) =>
          compare([
            ...describing(server.uri),
            ...mapping(server.uri),
            ...mapping(server.uri, "qemu:allocation-depth"),
            ...dumping(server.uri),
          ]),
      );
    });
  },
);

/** Run `body` with nbdkit serving `plugin args`, then stop it. */
function withNbdkit(
  plugin: string,
  args: readonly string[],
  body: (server: ServerProcess) => Promise<void>,
): Promise<void> {
  return withStarted(() => startNbdkit(plugin, args), body);
}

Deno.test(
  "nbdkit data, memory and file plugins, including sizes that are not whole lines",
  needs("nbdinfo", "nbddump", "nbdkit"),
  async () => {
    const data = ['1 2 3 @1048576 "hello" @2000000 1', "size=3M"];
    await withNbdkit("data", data, async (server) => {
      await compare([...describing(server.uri), ...mapping(server.uri), ...dumping(server.uri)]);
    });
    await withNbdkit("data", ['1 2 3 @90 "hello world!"', "size=100"], async (server) => {
      await compare([...describing(server.uri), ...dumping(server.uri, [0, 17, 99, 1000])]);
    });
    await withNbdkit("pattern", ["size=1000003"], async (server) => {
      await compare([...mapping(server.uri), ...dumping(server.uri, [999999])]);
      // -n as nbddump 1.14 reads it (scanf's %lu): no size suffixes, a sign, space before.
      await compare(
        ["1k", " +20", "-1", "99999999999999999999999"].map((
          n,
        ): Comparison => [["dump", "-n", n, server.uri], ["nbddump", "-n", n, server.uri]]),
      );
      await compare(
        [[["dump", "-n", "k1", server.uri], ["nbddump", "-n", "k1", server.uri]]],
        true,
      );
      // --offset (which nbddump 1.14 lacks): the pattern never repeats a line, so a
      // dump from 4096 is exactly those lines of the whole dump, addresses included.
      const whole = await run("nbddump", [server.uri]);
      const part = await denbd("dump", "--offset", "4096", "-n", "4096", server.uri);
      assert.equal(part.code, 0, part.stderr);
      const lines = whole.stdout.split("\n").filter((line) => /^0000001[0-f]/.test(line));
      assert.equal(part.stdout, lines.join("\n") + "\n");
      const beyond = await denbd("dump", "--offset", "2000000", server.uri);
      assert.equal(beyond.code, 1);
      assert.match(beyond.stderr, /offset 2000000 is beyond the end/);
    });
    await withNbdkit("memory", ["1M"], async (server) => {
      await compare([...describing(server.uri), ...mapping(server.uri), ...dumping(server.uri)]);
    });
    // A terabyte, nearly all of it zero: too slow for nbddump, which reads or
    // scans every line; denbd skips what base:allocation calls zero.
    const terabyte = ['1 @1099511627776 "abc"', `size=${2 ** 40 + 4096}`];
    await withNbdkit("data", terabyte, async (server) => {
      await compare([...describing(server.uri).slice(0, 1), ...mapping(server.uri).slice(0, 2)]);
      const zeroes = `${"00 ".repeat(8)} ${"00 ".repeat(8)}|${".".repeat(16)}|`;
      const dumped = await denbd("dump", server.uri);
      assert.equal(dumped.code, 0, dumped.stderr);
      assert.equal(
        dumped.stdout,
        [
          `0000000000: 01 ${"00 ".repeat(7)} ${"00 ".repeat(8)}|${".".repeat(16)}|`,
          `0000000010: ${zeroes}`,
          "*",
          `10000000000: 61 62 63 ${"00 ".repeat(5)} ${"00 ".repeat(8)}|abc${".".repeat(13)}|`,
          `10000000010: ${zeroes}`,
          "*",
          `10000000ff0: ${zeroes}`,
          "",
        ].join("\n"),
      );
    });
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 8 * MiB, REGIONS);
      await withNbdkit("file", [image], async (server) => {
        await compare([
          ...describing(server.uri),
          ...mapping(server.uri),
          ...dumping(server.uri),
          ...asking(server.uri, ["multi-conn", "fua", "cache", "zero"]),
        ]);
      });
    });
  },
);

Deno.test(
  "nbdkit: block size constraints, canonical names, list descriptions, an export it refuses",
  needs("nbdinfo", "nbddump", "nbdkit"),
  async () => {
    const policy = ["blocksize-minimum=512", "blocksize-preferred=4096", "blocksize-maximum=65536"];
    const data = ['1 2 3 @1048576 "hello"', "size=2M", ...policy];
    await withNbdkit("--filter=blocksize-policy", ["data", ...data], async (server) => {
      await compare([
        ...describing(server.uri),
        ...mapping(server.uri),
        ...dumping(server.uri, []),
      ]);
      // nbddump refuses a length that is not a multiple of the minimum block
      // size ("request is unaligned"); denbd widens its reads and dumps it.
      assert.equal((await run("nbddump", ["-n", "40", server.uri])).code, 1);
      const head = await denbd("dump", "-n", "40", server.uri);
      assert.equal(head.code, 0, head.stderr);
      assert.equal(
        head.stdout,
        (await check("nbddump", ["-n", "512", server.uri])).split("\n").slice(0, 3).join("\n") +
          "\n",
      );
    });
    // Exports a (the default, described), b (refused when opened) and c.
    const script = [
      `list_exports=printf "INTERLEAVED\\na\\nfirst export\\nb\\n\\nc\\nthird\\n"`,
      'open=if [ "$3" = b ]; then echo "EACCES refused" >&2; exit 1; fi; echo "$3"',
      "default_export=echo a",
      "get_size=echo 1048576",
      "pread=dd if=/dev/zero count=$3 iflag=count_bytes 2>/dev/null",
    ];
    await withNbdkit("eval", script, async (server) => {
      await compare([
        [["info", server.uri], ["nbdinfo", server.uri]],
        [["info", "--json", server.uri], ["nbdinfo", "--json", server.uri]],
      ]);
      // Both show a and c, report b on stderr and exit 1, with and without content.
      await compare([
        [["list", server.uri], ["nbdinfo", "--list", server.uri]],
        [["list", "--json", server.uri], ["nbdinfo", "--list", "--json", server.uri]],
        [["list", "--content", server.uri], ["nbdinfo", "--list", "--content", server.uri]],
      ], true);
      const json = await denbd("list", "--json", server.uri);
      assert.deepEqual(
        JSON.parse(json.stdout).exports.map((e: { description: string }) => e.description),
        [
          "first export",
          "third",
        ],
      );
      const listed = await denbd("list", server.uri);
      assert.match(listed.stderr, /^denbd list: .* \(for export 'b'\)\n$/);
    });
  },
);

Deno.test(
  "nbd-server: no structured replies, size 0 in list mode, no contexts to map",
  needs("nbdinfo", "nbddump", "nbd-server"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 8 * MiB, REGIONS);
      await withStarted(() => startNbdServer(dir, image), async (server) => {
        await compare([
          ...describing(server.uri),
          // nbd-server describes a size of 0 with NBD_OPT_INFO: file(1) is shown no bytes.
          [["list", "--content", server.uri], ["nbdinfo", "--list", "--content", server.uri]],
          ...dumping(server.uri),
          ...asking(server.uri, ["df", "sr", "write"]),
        ]);
        // The server has no base:allocation: both fail the same way.
        await compare([[["map", server.uri], ["nbdinfo", "--map", server.uri]]], true);
        const listed = await denbd("list", server.uri);
        assert.match(listed.stdout, /\texport-size: 0\n/, "what nbd-server answers to INFO");
      });
    });
  },
);

Deno.test(
  "denbd serve, over TCP and a Unix socket",
  needs("nbdinfo", "nbddump"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 8 * MiB, REGIONS);
      const args = ["-f", "raw", "-t", "-x", "disk", "-D", "the disk", image];
      await withServer(startDenbd, { args, exportName: "disk" }, async (server) => {
        await compare([
          ...describing(server.uri),
          ...mapping(server.uri),
          ...dumping(server.uri),
          ...asking(server.uri, ["write", "trim", "multi-conn"]),
        ]);
      });
      const socket = join(dir, "nbd.sock");
      await withServer(startDenbd, { args, socket, exportName: "disk" }, async (server) => {
        await compare([
          [["info", server.uri], ["nbdinfo", server.uri]],
          [["list", "--json", server.uri], ["nbdinfo", "--list", "--json", server.uri]],
        ]);
      });
    });
  },
);

/**
 * Images whose first bytes file(1) recognises, in `dir`: an ext4 file
 * system, an MBR with one partition, a qcow2 header (served as raw), text
 * shorter than nbdinfo's 8 KiB, an empty file and zeroes.
 */
async function makeRecognisableImages(dir: string): Promise<string[]> {
  await makeSparseImage(join(dir, "ext4.img"), 4 * MiB);
  await check("mkfs.ext4", ["-q", "-F", "-L", "denbd", join(dir, "ext4.img")]);
  const mbr = new Uint8Array(MiB);
  // Partition 1: active, type 0x83, from sector 2048 for 1024 sectors.
  mbr.set([0x80, 0, 0, 0, 0x83, 0, 0, 0, 0, 8, 0, 0, 0, 4, 0, 0], 446);
  mbr.set([0x55, 0xaa], 510);
  await Deno.writeFile(join(dir, "mbr.img"), mbr);
  await check("qemu-img", ["create", "-q", "-f", "qcow2", join(dir, "qcow2.img"), "1G"]);
  await Deno.writeTextFile(join(dir, "text.img"), "a line of plain text\n".repeat(100));
  await Deno.writeFile(join(dir, "empty.img"), new Uint8Array(0));
  await makeSparseImage(join(dir, "zero.img"), MiB);
  return ["ext4.img", "mbr.img", "qcow2.img", "text.img", "empty.img", "zero.img"];
}

/** info with its default content probe, as text and JSON. */
function probing(uri: string): Comparison[] {
  return [
    [["info", uri], ["nbdinfo", uri]],
    [["info", "--json", uri], ["nbdinfo", "--json", uri]],
  ];
}

/** `denbd ARGS...` or `TOOL ARGS...` with a PATH that has no file(1). */
async function withoutFile(command: string, args: readonly string[]): Promise<CommandResult> {
  const output = await new Deno.Command(command, {
    args: [...args],
    env: { PATH: "/nonexistent" },
    stdin: "null",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

Deno.test(
  "content probe: file(1) on ext4, MBR, qcow2, text, empty and zero images, as nbdinfo",
  needs("nbdinfo", "nbdkit", "qemu-nbd", "qemu-img", "mkfs.ext4", "file"),
  async () => {
    await withTempDir(async (dir) => {
      const names = await makeRecognisableImages(dir);
      // nbdkit serves every file of the directory as an export of its name.
      await withNbdkit("file", [`dir=${dir}`], async (server) => {
        const list = ["--list", "--content", server.uri];
        await compare([
          [["list", "--content", server.uri], ["nbdinfo", ...list]],
          [["info", "--json", ...list], ["nbdinfo", "--json", ...list]],
          ...names.flatMap((name) => probing(server.uri + name)),
        ]);
        const listed = JSON.parse((await denbd("list", "--content", "--json", server.uri)).stdout);
        const content = Object.fromEntries(
          listed.exports.map((e: Record<string, string>) => [e["export-name"], e.content]),
        );
        assert.match(content["ext4.img"], /^Linux rev 1\.0 ext4 filesystem data.*"denbd"/);
        assert.match(content["mbr.img"], /^DOS\/MBR boot sector; partition 1 : ID=0x83, active/);
        assert.match(content["qcow2.img"], /^QEMU QCOW2? Image/);
        assert.equal(content["text.img"], "ASCII text");
        assert.equal(content["empty.img"], "empty");
        assert.equal(content["zero.img"], "data");
        const plain = await denbd("list", server.uri);
        assert.ok(!plain.stdout.includes("content"), "--list alone probes nothing");
      });
      const mbr = { args: ["-t", "-f", "raw", "-x", "mbr", join(dir, "mbr.img")] };
      await withServer(startQemuNbd, { ...mbr, exportName: "mbr" }, async (server) => {
        await compare(probing(server.uri));
      });
      const ext4 = ["-t", "-f", "raw", "-x", "disk", join(dir, "ext4.img")];
      await withServer(startDenbd, { args: ext4, exportName: "disk" }, async (server) => {
        await compare(probing(server.uri));
      });
    });
  },
);

Deno.test(
  "content probe on one connection: qemu-nbd without -t serves nbdinfo and denbd info alike",
  needs("nbdinfo", "qemu-nbd", "file"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, MiB, [[0, 4096]]);
      const socket = join(dir, "nbd.sock");
      // Without -t, qemu-nbd serves one client and exits: the describing and
      // the reading must share one connection.
      const once = async (command: string[]) => {
        const start = { args: ["-f", "raw", "-r", image], socket };
        return await withServer(startQemuNbd, start, async (server) => {
          const [tool, ...args] = command;
          const result = tool === "denbd" ? await denbd(...args, server.uri) : await run(
            tool,
            [...args, server.uri],
          );
          assert.equal(await server.exited(), 0, "qemu-nbd exits after its one client");
          return result;
        });
      };
      for (const json of [[], ["--json"]]) {
        const theirs = await once(["nbdinfo", ...json]);
        const mine = await once(["denbd", "info", ...json]);
        assert.equal(theirs.code, 0, theirs.stderr);
        assert.equal(mine.code, 0, mine.stderr);
        assert.equal(mine.stdout, theirs.stdout);
        assert.match(mine.stdout, /content/);
      }
    });
  },
);

Deno.test(
  "content probe without file(1): the shell's message, and no content line",
  needs("nbdinfo", "nbdkit"),
  async () => {
    await withNbdkit("data", ['"hello" @4095 1', "size=1M"], async (server) => {
      const [deno, prefix] = denbdCommand();
      const mine = await withoutFile(deno, [...prefix, "info", server.uri]);
      const theirs = await withoutFile("/usr/bin/nbdinfo", [server.uri]);
      for (const result of [mine, theirs]) {
        assert.equal(result.code, 0, result.stderr);
        assert.match(result.stderr, /file: not found/);
      }
      assert.ok(!mine.stdout.includes("content"), mine.stdout);
      // nbdinfo 1.14.2 prints a content line of whatever its getline(3) buffer
      // held (uninitialised bytes): the rest of its output is denbd's.
      assert.equal(theirs.stdout.replace(/\tcontent: [^]*?\n(?=\turi: )/, ""), mine.stdout);
    });
  },
);

/**
 * nbdkit's data plugin with every byte value, text with letters, digits and
 * punctuation, a hole of more than a MiB (dumped without being read) and a
 * last line of 7 bytes.
 */
const COLOUR_DATA = [
  `${Array.from({ length: 256 }, (_, byte) => byte).join(" ")} @4096 "Hello, World! 123 ~{}" ` +
  "@3145728 255 1 2 32 126 127 128",
  `size=${3 * MiB + 7}`,
];

/** `command args`, its output read until past `after` bytes, then SIGTERM; its status and output. */
async function interrupted(
  command: string,
  args: readonly string[],
  after: number,
): Promise<{ code: number; output: Uint8Array }> {
  const child = new Deno.Command(command, {
    args: [...args],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
    signal: AbortSignal.timeout(60_000),
  }).spawn();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of child.stdout) {
    if (total < after && total + chunk.length >= after) child.kill("SIGTERM");
    chunks.push(chunk);
    total += chunk.length;
  }
  const output = new Uint8Array(total);
  chunks.reduce((at, chunk) => (output.set(chunk, at), at + chunk.length), 0);
  return { code: (await child.status).code, output };
}

Deno.test(
  "dump --color and its spellings: nbddump's escapes and Unicode marks, byte for byte",
  needs("nbddump", "nbdkit"),
  async () => {
    await withNbdkit("data", COLOUR_DATA, async (server) => {
      const dumps: string[][] = [
        ["--color"],
        ["--colour"],
        ["--colors", "-n", "4100"],
        ["--colours", "-n", "20"],
        ["--no-color"],
        ["--color", "--no-colour"],
        ["--no-colors", "--colour"],
        ["--no-colours", "-n", "300"],
      ];
      await compare(
        dumps.map((flags) => [["dump", ...flags, server.uri], ["nbddump", ...flags, server.uri]]),
      );
      const coloured = await denbd("dump", "--color", server.uri);
      const lines = coloured.stdout.split("\n");
      assert.equal(
        lines[2],
        "\x1b[0m\x1b[22;32m0000000020\x1b[22;90m: " +
          Array.from(
            { length: 16 },
            (_, i) => `\x1b[1;34m${(32 + i).toString(16)} ${i === 7 ? " " : ""}`,
          )
            .join("") +
          "\x1b[22;90m\u2502" +
          [..." !\"#$%&'()*+,-./"].map((c) => `\x1b[1;35m${c}`).join("") +
          "\x1b[22;90m\u2502",
        "line 0x20: printable punctuation bright magenta, non-zero hex bright blue",
      );
      assert.ok(lines.includes("\x1b[0m\u2606"), "squashed lines are a star");
      assert.ok(coloured.stdout.endsWith("\u2502\n\x1b[0m"), "the last line resets the colours");
    });
  },
);

Deno.test(
  "dump on a terminal colours by default, as nbddump (both run under script(1))",
  needs("nbddump", "nbdkit", "script"),
  async () => {
    await withNbdkit("data", COLOUR_DATA, async (server) => {
      const [deno, prefix] = denbdCommand();
      const onTerminal = (command: string[]) =>
        run("script", ["-qec", command.map((word) => `'${word}'`).join(" "), "/dev/null"]);
      const mine = await onTerminal([deno, ...prefix, "dump", "-n", "8192", server.uri]);
      const theirs = await onTerminal(["nbddump", "-n", "8192", server.uri]);
      assert.equal(theirs.code, 0, theirs.stderr);
      assert.equal(mine.code, 0, mine.stderr);
      assert.ok(theirs.stdout.startsWith("\x1b[22;32m0000000000"), "nbddump colours a terminal");
      assert.equal(mine.stdout, theirs.stdout);
    });
  },
);

Deno.test(
  "dump stopped by SIGTERM ends its line, resets the colours and exits 1, as nbddump",
  needs("nbddump", "nbdkit"),
  async () => {
    await withNbdkit("pattern", ["size=256M"], async (server) => {
      const [deno, prefix] = denbdCommand();
      for (const colour of [true, false]) {
        const flag = colour ? "--color" : "--no-color";
        const ending = new TextEncoder().encode(colour ? "\n\x1b[0m" : "\n");
        for (
          const [command, args] of [
            ["nbddump", [flag, server.uri]],
            [deno, [...prefix, "dump", flag, server.uri]],
          ] as const
        ) {
          const { code, output } = await interrupted(command, args, 65536);
          assert.equal(code, 1, `${command} ${flag}`);
          assert.deepEqual(
            output.subarray(output.length - ending.length),
            ending,
            `${command} ${flag}`,
          );
        }
      }
    });
  },
);

/**
 * A server from before NBD_OPT_INFO and NBD_OPT_GO: fixed newstyle with
 * LIST and EXPORT_NAME only (everything else is ERR_UNSUP), one 1 MiB
 * read-only export, and in transmission nothing but NBD_CMD_DISC.
 */
function startOldServer(): { uri: string; close: () => Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const connections = new Set<Promise<void>>();
  const serve = async (conn: Deno.Conn) => {
    const readExact = async (length: number) => {
      const bytes = new Uint8Array(length);
      for (let done = 0; done < length;) {
        const got = await conn.read(bytes.subarray(done));
        if (got === null) throw new Error("client went away");
        done += got;
      }
      return bytes;
    };
    const write = async (bytes: Uint8Array) => {
      for (let done = 0; done < bytes.length;) done += await conn.write(bytes.subarray(done));
    };
    try {
      await write(encodeGreeting(NBD_HANDSHAKE_FLAG.FIXED_NEWSTYLE));
      await readExact(4);
      while (true) {
        const { option, length } = decodeOptionHeader(await readExact(16));
        await readExact(length);
        if (option === NBD_OPT.EXPORT_NAME) {
          const flags = NBD_FLAG.HAS_FLAGS | NBD_FLAG.READ_ONLY | NBD_FLAG.SEND_FLUSH;
          await write(encodeExportNameReply(MiB, flags, false));
          await readExact(28); // NBD_CMD_DISC
          return;
        }
        if (option === NBD_OPT.LIST) {
          await write(encodeOptionReply(option, NBD_REP.SERVER, encodeRepServer("old", "")));
        }
        const done = option === NBD_OPT.LIST || option === NBD_OPT.ABORT;
        await write(encodeOptionReply(option, done ? NBD_REP.ACK : NBD_REP.ERR_UNSUP));
        if (option === NBD_OPT.ABORT) return;
      }
    } catch {
      // The client hung up: this connection is over.
    } finally {
      conn.close();
    }
  };
  const accepting = (async () => {
    for await (const conn of listener) {
      const served = serve(conn);
      connections.add(served);
      served.then(() => connections.delete(served));
    }
  })();
  return {
    uri: `nbd://127.0.0.1:${(listener.addr as Deno.NetAddr).port}/old`,
    close: async () => {
      listener.close();
      await accepting;
      await Promise.all(connections);
    },
  };
}

Deno.test(
  "a server without NBD_OPT_INFO or GO: described through NBD_OPT_EXPORT_NAME",
  needs("nbdinfo"),
  async () => {
    const server = startOldServer();
    try {
      await compare([
        ...describing(server.uri),
        ...asking(server.uri, ["write", "flush", "sr"]),
      ]);
      for (const command of ["info", "list"]) {
        const { code, stdout } = await denbd(command, server.uri);
        assert.equal(code, 0);
        assert.match(
          stdout,
          /using simple packets\nexport="old":\n\texport-size: 1048576 \(1M\)\n/,
        );
        assert.ok(!stdout.includes("contexts"), "no contexts can be listed after EXPORT_NAME");
      }
    } finally {
      await server.close();
    }
  },
);

/** Exit status 1 and one line on stderr naming the command. */
function assertFails(result: CommandResult, command: string, pattern: RegExp): void {
  assert.equal(result.code, 1, result.stdout + result.stderr);
  assert.equal(result.stdout, "");
  const [line, ...rest] = result.stderr.trimEnd().split("\n");
  assert.match(line, new RegExp(`^denbd ${command}: `));
  assert.match(line, pattern);
  assert.ok(rest.every((hint) => hint.startsWith("Try 'denbd")), result.stderr);
}

Deno.test(
  "errors: exit status 1 as nbdinfo/nbddump, one clear line on stderr",
  needs("nbdinfo", "nbddump", "qemu-nbd"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, MiB);
      const start = { args: ["-t", "-f", "raw", "-x", "disk", image], exportName: "disk" };
      await withServer(startQemuNbd, start, async (server) => {
        const missing = server.uri.replace(/disk$/, "missing");
        for (
          const [tool, ...args] of [["nbdinfo", missing], ["nbdinfo", "--map=x:y", server.uri]]
        ) {
          assert.equal((await run(tool, args)).code, 1);
        }
        assertFails(await denbd("info", missing), "info", /'missing'/);
        assertFails(await denbd("dump", missing), "dump", /missing/);
        assertFails(await denbd("map", missing), "map", /missing/);
        assertFails(
          await denbd("map", "--context", "x:y", server.uri),
          "map",
          /does not support metadata context "x:y"/,
        );
        assertFails(await denbd("info", "--can", "fly", server.uri), "info", /unknown --can/);
        assertFails(
          await denbd("info", "--size", "--is", "read-only", server.uri),
          "info",
          /together/,
        );
      });
    });
    const closed = `nbd://127.0.0.1:1/`;
    assert.equal((await run("nbdinfo", [closed])).code, 1);
    assert.equal((await run("nbddump", [closed])).code, 1);
    for (const command of ["info", "list", "map", "dump"]) {
      assertFails(await denbd(command, closed), command, /could not connect/);
      assertFails(await denbd(command, "http://x/"), command, /unsupported URI scheme/);
      assertFails(await denbd(command), command, /expected exactly one URI/);
    }
    assertFails(await denbd("dump", "-n", "lots", closed), "dump", /invalid length 'lots'/);
  },
);

Deno.test("a socket's path where a URI belongs gets nbdinfo's hint", needs("nbdinfo"), async () => {
  const [mine, theirs] = [
    await denbd("info", "/run/x.sock"),
    await run("nbdinfo", ["/run/x.sock"]),
  ];
  assert.equal(mine.code, theirs.code);
  for (const result of [mine, theirs]) {
    assert.match(result.stderr, /to open a local socket use "nbd\+unix:\/\/\/?\?socket=/);
  }
});

Deno.test("denbd help COMMAND is COMMAND --help; a mistyped command gets a suggestion", async () => {
  for (const command of ["serve", "daemon", "list", "info", "map", "dump", "copy", "qmp"]) {
    const viaHelp = await denbd("help", command);
    const viaFlag = await denbd(command, "--help");
    assert.equal(viaHelp.code, 0, command);
    assert.equal(viaHelp.stdout, viaFlag.stdout, command);
  }
  const overview = await denbd("help");
  assert.equal(overview.code, 0);
  assert.match(overview.stdout, /^Usage: denbd COMMAND/);
  for (const [typed, meant] of [["srve", "serve"], ["cpoy", "copy"], ["infoo", "info"]]) {
    const mistyped = await denbd(typed, "x");
    assert.equal(mistyped.code, 1);
    assert.match(
      mistyped.stderr,
      new RegExp(`unknown command '${typed}'; did you mean '${meant}'\\?`),
    );
  }
  const unlike = await denbd("help", "frobnicate");
  assert.equal(unlike.code, 1);
  assert.match(unlike.stderr, /^denbd: unknown command 'frobnicate'\nTry 'denbd --help'/);
  for (const args of [["constructor"], ["help", "toString"]]) {
    const inherited = await denbd(...args);
    assert.equal(inherited.code, 1, args.join(" "));
    assert.match(inherited.stderr, /^denbd: unknown command '(constructor|toString)'\n/);
  }
});

Deno.test("--help of every command names its flags", async () => {
  for (
    const [command, flags] of [
      ["info", ["--json", "--size", "--can", "--is", "--content", "--no-content"]],
      ["list", ["--json"]],
      ["map", ["--context", "--totals", "--json"]],
      ["dump", ["--length", "--limit", "--color", "--colour", "--no-color", "--no-colour"]],
    ] as const
  ) {
    const help = await denbd(command, "--help");
    assert.equal(help.code, 0);
    assert.match(help.stdout, new RegExp(`^Usage: denbd ${command} `));
    for (const flag of flags) assert.ok(help.stdout.includes(flag), `${command}: ${flag}`);
  }
});

/** Whether a process whose command line mentions `text` is still running. */
async function running(text: string): Promise<boolean> {
  return (await run("pgrep", ["-f", text])).code === 0;
}

Deno.test(
  "[ CMD ARGS ]: info, list, map and dump run the server as nbdinfo and nbddump do, and stop it",
  needs("nbdinfo", "nbddump", "qemu-nbd", "nbdkit"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "subprocess.img");
      await makeSparseImage(image, 8 * MiB, REGIONS);
      for (const server of [["qemu-nbd", "-r", "-f", "raw", image], ["nbdkit", "file", image]]) {
        const end = ["--", "[", ...server, "]"];
        await compare([
          [["info", ...end], ["nbdinfo", ...end]],
          [["info", "--json", ...end], ["nbdinfo", "--json", ...end]],
          [["info", "--size", ...end], ["nbdinfo", "--size", ...end]],
          [["info", "--map", ...end], ["nbdinfo", "--map", ...end]],
          [["info", "--list", ...end], ["nbdinfo", "--list", ...end]],
          [["list", "--json", ...end], ["nbdinfo", "--list", "--json", ...end]],
          [["map", "--totals", ...end], ["nbdinfo", "--map", "--totals", ...end]],
          [["dump", "-n", "100", ...end], ["nbddump", "-n", "100", ...end]],
        ]);
        assert.equal(await running(image), false, `${server[0]} was stopped`);
      }
      const missing = await denbd("info", "--", "[", join(dir, "no-such-server"), image, "]");
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /no-such-server/);
      assert.equal((await run("nbdinfo", ["--", "[", join(dir, "no-such-server"), "]"])).code, 1);
      const unclosed = await denbd("dump", "--", "[", "nbdkit", "memory", "1M");
      assert.equal(unclosed.code, 1);
      assert.match(unclosed.stderr, /'\[' without a matching '\]'/);
    });
  },
);
