/**
 * `denbd copy` against real servers (denbd serve, qemu-nbd, qemu-storage-daemon,
 * nbdkit) and compared with nbdcopy for the same pairs: same bytes, same
 * allocation (sparseness) of the result, streams both ways, multi-conn,
 * and a one-line message with exit code 1 for every error.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  check,
  denbdCommand,
  freePort,
  makeSparseImage,
  needs,
  run,
  type ServerProcess,
  sha256File,
  startDenbd,
  startQemuNbd,
  withServer,
  withStarted,
  withTempDir,
} from "./harness.ts";
import { startNbdkit, startQemuStorageDaemon } from "./peers.ts";

const MiB = 1024 * 1024;
const IMAGE_SIZE = 16 * MiB;
/** Data regions of the source image: aligned, unaligned to a MiB, small and large. */
const REGIONS = [[0, MiB], [3 * MiB + 4096, 64 * 1024], [5 * MiB, 2 * MiB], [
  15 * MiB,
  MiB,
]] as const;
/** A region that is allocated on disk but holds zeroes (found by sparse detection). */
const ALLOCATED_ZEROES = [9 * MiB, MiB] as const;

/** Run `denbd copy ARGS`. */
function denbdCopy(...args: string[]) {
  const [command, prefix] = denbdCommand();
  return run(command, [...prefix, "copy", ...args]);
}

/** Run `denbd copy ARGS` and require success. */
async function denbdCopyOk(...args: string[]): Promise<void> {
  const result = await denbdCopy(...args);
  assert.equal(result.code, 0, `denbd copy ${args.join(" ")}: ${result.stderr}`);
  assert.equal(result.stderr, "", "no output without a terminal or --progress");
}

/** Run nbdcopy and require success. */
async function nbdcopyOk(...args: string[]): Promise<void> {
  const result = await run("nbdcopy", args);
  assert.equal(result.code, 0, `nbdcopy ${args.join(" ")}: ${result.stderr}`);
}

/** Run a shell command line (for redirections of binary data); require success. */
async function shellOk(line: string): Promise<void> {
  const result = await run("sh", ["-c", line]);
  assert.equal(result.code, 0, `${line}: ${result.stderr}`);
}

/** The denbd command line as shell words. */
function denbdShell(): string {
  const [command, prefix] = denbdCommand();
  return [command, ...prefix].join(" ");
}

/**
 * Bytes of `path` stored as data, as the file system reports them to
 * SEEK_DATA/SEEK_HOLE (through `qemu-img map`). Unlike the blocks `stat`
 * counts, this leaves out the file system's own metadata, such as the extent
 * tree block ext4 adds to a file of many pieces, which depends on how the
 * writes happened to be laid out.
 */
async function allocated(path: string): Promise<number> {
  const map = JSON.parse(
    await check("qemu-img", ["map", "--output=json", "-f", "raw", path]),
  ) as { length: number; data: boolean }[];
  return map.reduce((sum, extent) => sum + (extent.data ? extent.length : 0), 0);
}

/** The source image: REGIONS of data, one region of allocated zeroes, holes elsewhere. */
async function makeSource(path: string): Promise<void> {
  await makeSparseImage(path, IMAGE_SIZE, REGIONS);
  const file = await Deno.open(path, { write: true });
  try {
    await file.seek(ALLOCATED_ZEROES[0], Deno.SeekMode.Start);
    await file.write(new Uint8Array(ALLOCATED_ZEROES[1]));
  } finally {
    file.close();
  }
}

/**
 * The source image with its data on the 256 KiB request grid: nbdcopy reads
 * (and with --allocated writes) whole requests around data that does not end
 * on it, where denbd stops at the extent, so only on this grid are their
 * requests and allocations the same.
 */
async function makeAlignedSource(path: string): Promise<void> {
  await makeSparseImage(path, IMAGE_SIZE, [[0, MiB], [5 * MiB, 2 * MiB], [15 * MiB, MiB]]);
  const file = await Deno.open(path, { write: true });
  try {
    await file.seek(ALLOCATED_ZEROES[0], Deno.SeekMode.Start);
    await file.write(new Uint8Array(ALLOCATED_ZEROES[1]));
  } finally {
    file.close();
  }
}

/** An image of `size` bytes full of 0xff, fully allocated (so that holes must be zeroed). */
async function makeFullImage(path: string, size: number): Promise<void> {
  await Deno.writeFile(path, new Uint8Array(size).fill(0xff));
}

/** The read-only servers a source image is exported by, by name. */
const SOURCE_SERVERS: Record<string, (image: string) => Promise<ServerProcess>> = {
  "denbd serve": (image) => startDenbd({ args: ["-f", "raw", "-t", "-r", "-e", "0", image] }),
  "qemu-nbd": (image) => startQemuNbd({ args: ["-f", "raw", "-t", "-r", "-e", "0", image] }),
  "qemu-storage-daemon": (image) => startQemuStorageDaemon(image, { readOnly: true }),
  "nbdkit file": (image) => startNbdkit("file", [image], { readOnly: true }),
};

Deno.test(
  "copy from every server to a file: same bytes, and as sparse as nbdcopy's copy",
  needs("qemu-img", "nbdcopy", "qemu-nbd", "qemu-storage-daemon", "nbdkit"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "source.img");
      await makeSource(image);
      const expected = await sha256File(image);
      for (const [name, start] of Object.entries(SOURCE_SERVERS)) {
        await withStarted(() => start(image), async (server) => {
          const ours = join(dir, "ours.img");
          const theirs = join(dir, "theirs.img");
          await denbdCopyOk(server.uri, ours);
          await nbdcopyOk(server.uri, theirs);
          assert.equal(await sha256File(ours), expected, name);
          assert.equal((await Deno.stat(ours)).size, IMAGE_SIZE, name);
          assert.equal(await allocated(ours), await allocated(theirs), `${name}: allocation`);
          assert.ok(await allocated(ours) <= 4 * MiB + 64 * 1024 + 8192, `${name}: sparse`);
          await Deno.remove(ours);
          await Deno.remove(theirs);
        });
      }
    });
  },
);

Deno.test(
  "copy from nbdkit's data and memory plugins matches nbdcopy's copy",
  needs("qemu-img", "nbdcopy", "nbdkit"),
  async () => {
    await withTempDir(async (dir) => {
      const pattern = "1 2 3 @4096 (0x55)*8192 @1048576 (0xaa 0xbb)*65536 @3145728 9";
      await withStarted(() => startNbdkit("data", [pattern, "size=4M"]), async (server) => {
        await denbdCopyOk(server.uri, join(dir, "ours.img"));
        await nbdcopyOk(server.uri, join(dir, "theirs.img"));
      });
      assert.equal(
        await sha256File(join(dir, "ours.img")),
        await sha256File(join(dir, "theirs.img")),
      );
      assert.equal(
        await allocated(join(dir, "ours.img")),
        await allocated(join(dir, "theirs.img")),
      );

      const image = join(dir, "source.img");
      await makeSource(image);
      await withStarted(() => startNbdkit("memory", [String(IMAGE_SIZE)]), async (server) => {
        await denbdCopyOk(image, server.uri);
        await denbdCopyOk(server.uri, join(dir, "back.img"));
        await nbdcopyOk(server.uri, join(dir, "back-nbdcopy.img"));
      });
      const back = join(dir, "back.img");
      assert.equal(await sha256File(back), await sha256File(image));
      assert.equal(await allocated(back), await allocated(join(dir, "back-nbdcopy.img")));
    });
  },
);

Deno.test(
  "copy a file to writable exports: holes are zeroed (punched), as nbdcopy leaves them",
  needs("qemu-img", "nbdcopy", "qemu-nbd"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "source.img");
      await makeSource(image);
      const expected = await sha256File(image);
      const servers = { "denbd serve": startDenbd, "qemu-nbd": startQemuNbd };
      for (const [name, starter] of Object.entries(servers)) {
        const usage: number[] = [];
        for (const tool of ["denbd", "nbdcopy"]) {
          const target = join(dir, `${tool}-target.img`);
          await makeFullImage(target, IMAGE_SIZE + MiB);
          const start = { args: ["-f", "raw", "-t", "--discard=unmap", target] };
          await withServer(starter, start, async (server) => {
            if (tool === "denbd") await denbdCopyOk(image, server.uri);
            else await nbdcopyOk(image, server.uri);
          });
          const head = join(dir, "head.img");
          await Deno.writeFile(head, (await Deno.readFile(target)).subarray(0, IMAGE_SIZE));
          assert.equal(await sha256File(head), expected, `${name} via ${tool}`);
          const tail = (await Deno.readFile(target)).subarray(IMAGE_SIZE);
          assert.ok(tail.every((byte) => byte === 0xff), "bytes past the source are left alone");
          usage.push(await allocated(target));
        }
        assert.equal(usage[0], usage[1], `${name}: allocation after denbd copy and nbdcopy`);
        assert.ok(usage[0] < IMAGE_SIZE, `${name}: holes were punched`);
      }
    });
  },
);

Deno.test(
  "copy between two NBD servers, and from a file to a file",
  needs("qemu-img", "qemu-nbd", "nbdkit"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "source.img");
      await makeSource(image);
      await withStarted(() => SOURCE_SERVERS["qemu-nbd"](image), async (source) => {
        await withStarted(() => startNbdkit("memory", [String(IMAGE_SIZE)]), async (target) => {
          await denbdCopyOk(source.uri, target.uri);
          await denbdCopyOk(target.uri, join(dir, "back.img"));
        });
      });
      assert.equal(await sha256File(join(dir, "back.img")), await sha256File(image));
      await Deno.writeFile(join(dir, "local.img"), new Uint8Array(3 * IMAGE_SIZE).fill(7));
      await denbdCopyOk(image, join(dir, "local.img"));
      assert.equal(await sha256File(join(dir, "local.img")), await sha256File(image));
      assert.equal(await allocated(join(dir, "local.img")), await allocated(join(dir, "back.img")));
    });
  },
);

Deno.test(
  "standard streams: pipes are copied in order and not sparse; redirected files are files",
  needs("qemu-img", "nbdcopy", "qemu-nbd"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "source.img");
      await makeSource(image);
      const expected = await sha256File(image);
      const uri = (server: ServerProcess) => `'${server.uri}'`;
      await withStarted(() => SOURCE_SERVERS["qemu-nbd"](image), async (server) => {
        await shellOk(`${denbdShell()} copy ${uri(server)} - | cat > ${dir}/piped.img`);
        await shellOk(`nbdcopy ${uri(server)} - | cat > ${dir}/piped-nbdcopy.img`);
        await shellOk(`${denbdShell()} copy ${uri(server)} - > ${dir}/redirected.img`);
        await shellOk(`nbdcopy ${uri(server)} - > ${dir}/redirected-nbdcopy.img`);
      });
      for (const name of ["piped", "redirected"]) {
        assert.equal(await sha256File(join(dir, `${name}.img`)), expected, name);
      }
      assert.equal(await allocated(join(dir, "piped.img")), IMAGE_SIZE, "a pipe has no holes");
      assert.equal(await allocated(join(dir, "piped-nbdcopy.img")), IMAGE_SIZE);
      // nbdcopy copies "-" synchronously, without zero-block detection, so it writes the
      // allocated zeroes; denbd treats the redirected file as any file and leaves them out.
      const redirected = await allocated(join(dir, "redirected.img"));
      assert.ok(redirected < IMAGE_SIZE, "a file has holes");
      assert.ok(redirected <= await allocated(join(dir, "redirected-nbdcopy.img")));

      const target = join(dir, "target.img");
      await makeFullImage(target, IMAGE_SIZE);
      await withServer(startQemuNbd, { args: ["-f", "raw", "-t", target] }, async (server) => {
        const tooLong = `head -c ${IMAGE_SIZE + 1} /dev/zero | ${denbdShell()} copy - ${
          uri(server)
        }`;
        const result = await run("sh", ["-c", tooLong]);
        assert.equal(result.code, 1);
        assert.match(result.stderr, /^denbd copy: .*the source is larger than the destination/);
        await shellOk(`cat ${image} | ${denbdShell()} copy - ${uri(server)}`);
        assert.equal(await sha256File(target), expected, "from a pipe");
        await shellOk(`${denbdShell()} copy ${image} ${uri(server)} < /dev/null`);
        await shellOk(`${denbdShell()} copy - ${uri(server)} < ${image}`);
        assert.equal(await sha256File(target), expected, "from a redirected file");
      });

      // A file destination from a pipe: truncated, then written in order.
      await shellOk(`cat ${image} | ${denbdShell()} copy - ${dir}/from-pipe.img`);
      assert.equal(await sha256File(join(dir, "from-pipe.img")), expected);
    });
  },
);

Deno.test(
  "--connections 4 opens four connections to a multi-conn server, one otherwise; -T 1 caps them at one",
  needs("nbdkit"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "source.img");
      await makeSource(image);
      const counts: number[] = [];
      const variants = [[[], []], [["--filter=multi-conn"], ["multi-conn-mode=disable"]]];
      for (const [filters, parameters] of variants) {
        const log = join(dir, `log-${counts.length}.txt`);
        const args = [
          "--filter=log",
          ...filters,
          "memory",
          String(IMAGE_SIZE),
          `logfile=${log}`,
          ...parameters,
        ];
        await withStarted(() => startNbdkitWith(args), async (server) => {
          await denbdCopyOk("--connections", "4", image, server.uri);
          await denbdCopyOk("-C", "4", server.uri, join(dir, "back.img"));
          await denbdCopyOk("-T", "1", "-C", "4", image, server.uri);
        });
        assert.equal(await sha256File(join(dir, "back.img")), await sha256File(image));
        const text = await Deno.readTextFile(log);
        // Two copies, each over `--connections` connections when multi-conn is allowed,
        // then one with -T 1 over one connection.
        counts.push((text.match(/ Connect /g) ?? []).length);
      }
      assert.deepEqual(counts, [9, 3]);
    });
  },
);

Deno.test("errors: one line on stderr and exit code 1", needs("qemu-nbd", "nbdkit"), async () => {
  await withTempDir(async (dir) => {
    const image = join(dir, "source.img");
    await makeSource(image);
    const expectFailure = async (args: string[], message: RegExp) => {
      const result = await denbdCopy(...args);
      assert.equal(result.code, 1, `${args.join(" ")}: ${result.stderr}`);
      assert.equal(result.stdout, "");
      const lines = result.stderr.trimEnd().split("\n");
      assert.match(lines[0], /^denbd copy: /);
      assert.match(result.stderr, message);
      if (!/Try/.test(result.stderr)) assert.equal(lines.length, 1, result.stderr);
    };
    await expectFailure(
      [`nbd://127.0.0.1:${freePort()}/`, join(dir, "x.img")],
      /could not connect to 127\.0\.0\.1/,
    );
    await expectFailure(
      [join(dir, "missing.img"), join(dir, "x.img")],
      /missing\.img: No such file/,
    );
    await expectFailure([image, join(dir, "no", "such", "dir.img")], /No such file or directory/);
    await expectFailure([image], /expected SOURCE and DESTINATION/);
    await withStarted(() => SOURCE_SERVERS["qemu-nbd"](image), async (server) => {
      await expectFailure([image, server.uri], /the destination is read-only/);
    });
    await withStarted(() => startNbdkit("memory", [String(MiB)]), async (server) => {
      await expectFailure(
        [image, server.uri],
        /the destination \(1048576 bytes\) is smaller than the source \(16777216 bytes\)/,
      );
    });
    await withStarted(
      () =>
        startNbdkitWith([
          "--filter=error",
          "memory",
          String(IMAGE_SIZE),
          "error-pread=EIO",
          "error-pread-rate=100%",
        ]),
      async (server) => {
        await denbdCopyOk(image, server.uri);
        await expectFailure(
          [server.uri, join(dir, "x.img")],
          /read of \d+ bytes at offset \d+ failed: read: Input\/output error/,
        );
      },
    );
  });
});

Deno.test(
  "null: as the destination reads the source and throws it away, as nbdcopy's does",
  needs("nbdcopy", "nbdkit"),
  async () => {
    await withTempDir(async (dir) => {
      const source = join(dir, "source.img");
      await makeSource(source);
      const log = join(dir, "log.txt");
      const args = ["--filter=log", "memory", String(IMAGE_SIZE), `logfile=${log}`];
      const readsLogged = async () =>
        ((await Deno.readTextFile(log)).match(/ Read /g) ?? []).length;
      const [command, prefix] = denbdCommand();
      await withStarted(() => startNbdkitWith(args), async (server) => {
        await denbdCopyOk(source, server.uri);
        let reads = await readsLogged();
        const copiers: [string, string[]][] = [[command, [...prefix, "copy"]], ["nbdcopy", []]];
        for (const [program, programArgs] of copiers) {
          const result = await run(program, [...programArgs, server.uri, "null:"], { cwd: dir });
          assert.equal(result.code, 0, `${program}: ${result.stderr}`);
          assert.equal(result.stderr, "");
          const files = [];
          for await (const entry of Deno.readDir(dir)) files.push(entry.name);
          assert.deepEqual(files.sort(), ["log.txt", "source.img"], `${program} wrote no file`);
          const before = reads;
          reads = await readsLogged();
          assert.ok(reads > before, `${program} read the source's data`);
        }
      });
      // As a source, null: is only a file name, for nbdcopy as for denbd.
      const result = await denbdCopy("null:", join(dir, "x.img"));
      assert.equal(result.code, 1);
      assert.match(result.stderr, /^denbd copy: null:: No such file or directory\n$/);
    });
  },
);

Deno.test("--progress draws a bar on stderr and finishes it", async () => {
  await withTempDir(async (dir) => {
    const image = join(dir, "source.img");
    await makeSource(image);
    const result = await denbdCopy("--progress", image, join(dir, "copy.img"));
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /^\r {2}0% \[\.{30}\]/);
    assert.match(result.stderr, /\r100% \[#{30}\] 16\.0 MiB copied in \d+:\d\d, .*\/s *\n$/);
  });
});

/**
 * nbdkit with filters: the peers' starter puts its plugin argument just
 * before the plugin's arguments, which is where nbdkit also takes filters.
 */
function startNbdkitWith(args: string[]): Promise<ServerProcess> {
  return startNbdkit(args[0], args.slice(1));
}

/** The two copiers compared: denbd copy and nbdcopy, as a program and its leading arguments. */
function copiers(): [string, [string, string[]]][] {
  const [command, prefix] = denbdCommand();
  return [["denbd", [command, [...prefix, "copy"]]], ["nbdcopy", ["nbdcopy", []]]];
}

/**
 * The requests an nbdkit log filter recorded, counted by kind (zeroes also by
 * whether they may trim): what a copier sent, for comparison.
 */
async function requestTally(log: string): Promise<Record<string, number>> {
  const tally: Record<string, number> = {};
  for (const line of (await Deno.readTextFile(log)).split("\n")) {
    const request = / connection=\d+ ([A-Z][a-z]+) (.*)$/.exec(line);
    if (!request) continue;
    const key = request[1] === "Zero"
      ? `Zero trim=${/trim=(\d)/.exec(request[2])?.[1]}`
      : request[1];
    tally[key] = (tally[key] ?? 0) + 1;
  }
  return tally;
}

Deno.test(
  "nbdcopy's options send the same requests as nbdcopy to a [ nbdkit ... ] destination",
  needs("nbdcopy", "nbdkit"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "source.img");
      await makeAlignedSource(image);
      const log = join(dir, "log.txt");
      const server = ["[", "nbdkit", "--filter=log", "memory", "16M", `logfile=${log}`, "]"];
      const optionSets = [
        [],
        ["--flush"],
        ["--allocated"],
        ["--destination-is-zero"],
        ["--target-is-zero"],
        ["--no-extents"],
        ["--synchronous"],
        ["-S", "0"],
        ["--sparse=1048576"],
        ["--request-size=65536"],
      ];
      for (const options of optionSets) {
        const tallies: Record<string, number>[] = [];
        for (const [name, [program, prefix]] of copiers()) {
          await Deno.remove(log).catch(() => {});
          const result = await run(program, [...prefix, ...options, "--", image, ...server]);
          assert.equal(result.code, 0, `${name} ${options.join(" ")}: ${result.stderr}`);
          tallies.push(await requestTally(log));
        }
        assert.deepEqual(tallies[0], tallies[1], `denbd and nbdcopy ${options.join(" ")}`);
        assert.equal(tallies[0].Connect, 1, "one connection to a subprocess");
      }
    });
  },
);

Deno.test(
  "nbdcopy's options give a file the same bytes and allocation as nbdcopy gives it",
  needs("nbdcopy", "qemu-img"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "source.img");
      await makeAlignedSource(image);
      const expected = await sha256File(image);
      const optionSets = [
        ["--allocated"],
        ["--destination-is-zero"],
        ["--no-extents"],
        ["--synchronous"],
        ["-S", "0"],
        ["-S", "1048576"],
        ["--request-size=65536", "--queue-size=65536"],
        ["-T", "1", "-C", "1", "-R", "1"],
        ["--flush"],
      ];
      for (const options of optionSets) {
        const usage: number[] = [];
        for (const [name, [program, prefix]] of copiers()) {
          const target = join(dir, `${name}.img`);
          const result = await run(program, [...prefix, ...options, image, target]);
          assert.equal(result.code, 0, `${name} ${options.join(" ")}: ${result.stderr}`);
          assert.equal(await sha256File(target), expected, `${name} ${options.join(" ")}`);
          usage.push(await allocated(target));
          await Deno.remove(target);
        }
        assert.equal(usage[0], usage[1], `allocation with ${options.join(" ")}`);
      }
    });
  },
);

Deno.test(
  "--allocated into an NBD export: zeroes without trim, as nbdcopy, and the export fully allocated",
  needs("nbdcopy", "qemu-img", "qemu-nbd"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "source.img");
      await makeAlignedSource(image);
      const usage: number[] = [];
      for (const [name, [program, prefix]] of copiers()) {
        const target = join(dir, `${name}-target.img`);
        await makeFullImage(target, IMAGE_SIZE);
        const start = { args: ["-f", "raw", "-t", "--discard=unmap", target] };
        await withServer(startQemuNbd, start, async (server) => {
          const result = await run(program, [...prefix, "--allocated", image, server.uri]);
          assert.equal(result.code, 0, `${name}: ${result.stderr}`);
        });
        assert.equal(await sha256File(target), await sha256File(image), name);
        usage.push(await allocated(target));
      }
      assert.deepEqual(usage, [IMAGE_SIZE, IMAGE_SIZE]);
    });
  },
);

/** The most reads an nbdkit log filter saw in flight at once. */
async function readsInFlight(log: string): Promise<number> {
  let current = 0;
  let most = 0;
  for (const line of (await Deno.readTextFile(log)).split("\n")) {
    if (/ connection=\d+ Read id=/.test(line)) most = Math.max(most, ++current);
    else if (/ connection=\d+ \.\.\.Read id=/.test(line)) current--;
  }
  return most;
}

Deno.test(
  "--queue-size bounds the bytes of reads in flight as nbdcopy's does",
  needs("nbdcopy", "nbdkit"),
  async () => {
    await withTempDir(async (dir) => {
      const log = join(dir, "log.txt");
      // Slow reads (the delay filter under the log filter), so that every read the copier
      // allows is in flight before the first one is answered.
      const server = [
        ...["[", "nbdkit", "--filter=log", "--filter=delay", "pattern", "1M"],
        ...["rdelay=300ms", `logfile=${log}`, "]"],
      ];
      for (const [queueSize, reads] of [[262144, 1], [1048576, 4]]) {
        for (const [name, [program, prefix]] of copiers()) {
          await Deno.remove(log).catch(() => {});
          const args = [...prefix, `--queue-size=${queueSize}`, "--", ...server, "null:"];
          const result = await run(program, args);
          assert.equal(result.code, 0, `${name}: ${result.stderr}`);
          assert.equal(await readsInFlight(log), reads, `${name} --queue-size=${queueSize}`);
        }
      }
    });
  },
);

Deno.test(
  "--progress=FD writes nbdcopy's lines at nbdcopy's moments",
  needs("nbdcopy"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "source.img");
      await makeSource(image);
      const big = join(dir, "big.img");
      await makeSparseImage(big, 300 * MiB, [[200 * MiB, MiB]]);
      const empty = join(dir, "empty.img");
      await Deno.writeFile(empty, new Uint8Array());
      const cases = [
        [image, "null:"],
        ["--synchronous", image, join(dir, "out.img")],
        [big, "null:"],
        ["--synchronous", big, "null:"],
        [empty, "null:"],
      ];
      for (const args of cases) {
        const lines: string[] = [];
        for (const [name, [program, prefix]] of copiers()) {
          const progress = join(dir, `${name}.progress`);
          const words = [program, ...prefix, "--progress=3", ...args].map((word) => `'${word}'`);
          await shellOk(`${words.join(" ")} 3>'${progress}'`);
          lines.push(await Deno.readTextFile(progress));
        }
        assert.equal(lines[0], lines[1], args.join(" "));
        assert.match(lines[0], /^0\/100\n(\d+\/100\n)*100\/100\n$/);
      }
      const appended = join(dir, "appended.progress");
      await Deno.writeTextFile(appended, "earlier line\n");
      const [program, prefix] = copiers()[0][1];
      const words = [program, ...prefix, "--progress=3", image, "null:"].map((word) => `'${word}'`);
      await shellOk(`${words.join(" ")} 3>>'${appended}'`);
      assert.match(
        await Deno.readTextFile(appended),
        /^earlier line\n0\/100\n(\d+\/100\n)*100\/100\n$/,
      );
      const result = await denbdCopy("--progress=x", image, "null:");
      assert.equal(result.code, 1);
      assert.match(result.stderr, /^denbd copy: --progress: could not parse: x\n/);
    });
  },
);

Deno.test(
  "[ CMD ARGS ] ends: qemu-nbd and nbdkit run through socket activation, stopped on every path",
  needs("nbdcopy", "qemu-img", "qemu-nbd", "nbdkit"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "source.img");
      await makeSource(image);
      const qcow2 = join(dir, "source.qcow2");
      await check("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", image, qcow2]);
      const qemuNbd = ["[", "qemu-nbd", "-f", "qcow2", qcow2, "]"];
      for (const [name, [program, prefix]] of copiers()) {
        const target = join(dir, `${name}.img`);
        const result = await run(program, [...prefix, "--", ...qemuNbd, target]);
        assert.equal(result.code, 0, `${name}: ${result.stderr}`);
        assert.equal(await sha256File(target), await sha256File(image), name);
      }
      assert.equal(
        await allocated(join(dir, "denbd.img")),
        await allocated(join(dir, "nbdcopy.img")),
      );

      // Both ends subprocesses; then failures, each leaving no server behind.
      const pidFile = join(dir, "nbdkit.pid");
      const nbdkit = (size: string, ...flags: string[]) => [
        "[",
        "nbdkit",
        "-P",
        pidFile,
        ...flags,
        "memory",
        size,
        "]",
      ];
      const expectStopped = async () => {
        const pid = Number(await Deno.readTextFile(pidFile));
        assert.throws(() => Deno.kill(pid, "SIGCONT"), "the server was stopped");
        await Deno.remove(pidFile);
      };
      await denbdCopyOk("--", ...qemuNbd, ...nbdkit("16M"));
      await expectStopped();
      const tooSmall = await denbdCopy("--", image, ...nbdkit("1M"));
      assert.equal(tooSmall.code, 1);
      assert.match(
        tooSmall.stderr,
        /^denbd copy: nbdkit: the destination \(1048576 bytes\) is smaller/,
      );
      await expectStopped();
      const readOnly = await denbdCopy("--", image, ...nbdkit("16M", "-r"));
      assert.match(readOnly.stderr, /^denbd copy: nbdkit: the destination is read-only/);
      await expectStopped();
      const failingReads = await denbdCopy(
        "--",
        ...["[", "nbdkit", "-P", pidFile, "--filter=error", "pattern", "16M"],
        ...["error-pread=EIO", "error-pread-rate=100%", "]", join(dir, "x.img")],
      );
      assert.equal(failingReads.code, 1);
      assert.match(
        failingReads.stderr,
        /^denbd copy: nbdkit: read of \d+ bytes at offset \d+ failed/m,
      );
      await expectStopped();
      const missing = await denbdCopy("--", "[", "denbd-no-such-command", "]", "null:");
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /denbd copy: denbd-no-such-command: /);
      for (const args of [["[", "nbdkit", "memory", "1M", "null:"], ["[", "]", "null:"]]) {
        const result = await denbdCopy("--", ...args);
        assert.equal(result.code, 1);
        assert.match(result.stderr, /^denbd copy: .*\nTry 'denbd copy --help'/);
      }
    });
  },
);

Deno.test(
  "option values are read and refused as nbdcopy reads and refuses them",
  needs("nbdcopy"),
  async () => {
    const cases = [
      ["--request-size=4096"],
      ["--request-size=33554432"],
      ["--request-size=1000"],
      ["--request-size=64M"],
      ["--request-size=67108864"],
      ["--request-size=abc"],
      ["--request-size=4096x"],
      ["--request-size=4294971392"],
      ["--queue-size=1M"],
      ["--queue-size=0"],
      ["--queue-size=abc"],
      ["-S", "0"],
      ["-S", "256"],
      ["-S", "1k"],
      ["-S", "1000"],
      ["--sparse=4096"],
      ["-T", "0"],
      ["-T", "abc"],
      ["--threads=-1"],
      ["-C", "0"],
      ["-C", "2x"],
      ["-R", "0"],
      ["--requests=16"],
      ["--progress=-1"],
    ];
    for (const args of cases) {
      const results = [];
      for (const [, [program, prefix]] of copiers()) {
        results.push(await run(program, [...prefix, ...args, "/dev/null", "null:"]));
      }
      const [ours, theirs] = results;
      assert.equal(ours.code, theirs.code, `${args.join(" ")}: ${ours.stderr} / ${theirs.stderr}`);
      if (theirs.code !== 0) {
        const message = theirs.stderr.replace(/^nbdcopy: /, "").split("\n")[0];
        assert.equal(ours.stderr.split("\n")[0], `denbd copy: ${message}`, args.join(" "));
      }
    }
  },
);

Deno.test("every option of nbdcopy is one of denbd copy's", needs("nbdcopy"), async () => {
  for (const listing of ["--long-options", "--short-options"]) {
    const theirs = (await check("nbdcopy", [listing])).trim().split("\n");
    const ours = (await denbdCopy(listing)).stdout.trim().split("\n");
    const extra = listing === "--short-options" ? ["-h"] : [];
    assert.deepEqual(ours.sort(), [...theirs, ...extra].sort(), listing);
  }
});

Deno.test("-v describes both ends and the settings; -V shows the version", async () => {
  await withTempDir(async (dir) => {
    const image = join(dir, "source.img");
    await makeSource(image);
    const verbose = await denbdCopy("-v", "--synchronous", image, "null:");
    assert.equal(verbose.code, 0, verbose.stderr);
    assert.equal(
      verbose.stderr,
      [
        `denbd copy: src: file "${image}"`,
        "denbd copy: src: size=16777216 (16M)",
        'denbd copy: dst: null "null:"',
        "denbd copy: dst: size=16777216 (16M)",
        "denbd copy: connections=1 requests=1 threads=1 synchronous=true request-size=262144",
        "",
      ].join("\n"),
    );
    const version = await denbdCopy("-V");
    assert.match(version.stdout, /^denbd copy \d+\.\d+\.\d+\n$/);
  });
});
