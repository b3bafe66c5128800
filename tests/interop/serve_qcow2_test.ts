/**
 * `denbd serve` on qcow2 images against qemu-nbd 7.2 (images made by
 * qemu-img and qemu-io): the format named or probed, a backing chain, the
 * backup tool's command line with a persistent bitmap (-B), a temporary
 * overlay (-s) that leaves the image as it was, and an internal snapshot
 * (-l) exported read-only. Each serves what qemu-nbd serves.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { check, delay, denbdCommand, needs, run, sha256File, withTempDir } from "./harness.ts";

/** Start `program` (qemu-nbd or denbd serve) with --fork on `socket`; returns how to stop it. */
async function forked(
  program: "qemu-nbd" | "denbd",
  dir: string,
  args: readonly string[],
): Promise<{ uri: string; stop: () => Promise<void> }> {
  const socket = join(dir, `${program}.sock`);
  const pidFile = join(dir, `${program}.pid`);
  const all = ["--fork", "-t", `--pid-file=${pidFile}`, "-k", socket, ...args];
  const [command, prefix] = program === "denbd"
    ? [denbdCommand()[0], [...denbdCommand()[1], "serve"]]
    : ["qemu-nbd", []];
  const started = await run(command, [...prefix, ...all], { timeoutMs: 20000 });
  assert.equal(started.code, 0, `${program} ${args.join(" ")}: ${started.stderr}`);
  const pid = Number((await Deno.readTextFile(pidFile)).trim());
  const name = args.includes("-x") ? args[args.indexOf("-x") + 1] : "";
  return {
    uri: `nbd+unix:///${name}?socket=${socket}`,
    stop: async () => {
      Deno.kill(pid, "SIGTERM");
      for (let i = 0; i < 100; i++) {
        try {
          Deno.kill(pid, "SIGCONT");
        } catch {
          return;
        }
        await delay(50);
      }
      throw new Error(`${program} ${pid} still running`);
    },
  };
}

/** What both servers export with `args`: the bytes (nbdcopy) and, if given, a metadata context's map. */
async function sameExport(dir: string, args: readonly string[], context?: string): Promise<void> {
  const seen: string[] = [];
  for (const program of ["qemu-nbd", "denbd"] as const) {
    const server = await forked(program, dir, args);
    try {
      const out = join(dir, `${program}.out`);
      const copy = await run("nbdcopy", [server.uri, out]);
      assert.equal(copy.code, 0, copy.stderr);
      const map = context ? (await check("nbdinfo", [`--map=${context}`, server.uri])) : "";
      seen.push(`${await sha256File(out)}\n${map}`);
    } finally {
      await server.stop();
    }
  }
  assert.equal(seen[1], seen[0], `denbd serve ${args.join(" ")}`);
}

/** base.qcow2 (data at 0) <- top.qcow2 (data at 1 MiB), and a bitmap cp1 on top recording a write. */
async function images(dir: string): Promise<void> {
  const base = join(dir, "base.qcow2");
  const top = join(dir, "top.qcow2");
  await check("qemu-img", ["create", "-q", "-f", "qcow2", base, "4M"]);
  await check("qemu-io", ["-c", "write -P 0x11 0 128k", base]);
  await check("qemu-img", ["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top]);
  await check("qemu-img", ["bitmap", "--add", top, "cp1"]);
  await check("qemu-io", ["-c", "write -P 0x22 1M 64k", "-c", "write -P 0x33 64k 4k", top]);
}

Deno.test(
  "qcow2 with a backing chain, named or probed, and the backup tool's line with -B",
  needs("qemu-nbd", "qemu-img", "qemu-io", "nbdcopy", "nbdinfo"),
  async () => {
    await withTempDir(async (dir) => {
      await images(dir);
      const top = join(dir, "top.qcow2");
      await sameExport(dir, ["-r", "-f", "qcow2", top]);
      await sameExport(dir, ["-r", top], "base:allocation");
      await sameExport(
        dir,
        [
          "-r",
          "--format=qcow2",
          "-x",
          "sda",
          top,
          "-t",
          "-e",
          "2",
          "--detect-zeroes=on",
          "--bitmap=cp1",
        ],
        "qemu:dirty-bitmap:cp1",
      );
      const check = await run("qemu-img", ["check", top]);
      assert.equal(check.code, 0, check.stdout + check.stderr);
    });
  },
);

Deno.test(
  "-s writes to a temporary overlay: the image is unchanged and the overlay is gone at exit",
  needs("qemu-img", "qemu-io", "nbdsh"),
  async () => {
    await withTempDir(async (dir) => {
      await images(dir);
      const top = join(dir, "top.qcow2");
      const before = await sha256File(top);
      const tmp = join(dir, "tmp");
      await Deno.mkdir(tmp);
      const socket = join(dir, "s.sock");
      const [command, prefix] = denbdCommand();
      const server = new Deno.Command(command, {
        args: [...prefix, "serve", "-s", "-t", "-k", socket, top],
        env: { TMPDIR: tmp },
        stdout: "null",
        stderr: "piped",
      }).spawn();
      try {
        for (let i = 0; i < 200 && !(await Deno.stat(socket).catch(() => null)); i++) {
          await delay(50);
        }
        const script = "h.pwrite(b'\\x44' * 4096, 0); " +
          "assert h.pread(4096, 0) == b'\\x44' * 4096; " +
          "assert h.pread(4096, 1048576) == b'\\x22' * 4096";
        await check("nbdsh", ["-u", `nbd+unix:///?socket=${socket}`, "-c", script]);
        assert.equal([...Deno.readDirSync(tmp)].length, 1, "the overlay lives in TMPDIR");
      } finally {
        server.kill("SIGTERM");
        await server.output();
      }
      assert.equal(await sha256File(top), before, "the image was not written");
      assert.deepEqual([...Deno.readDirSync(tmp)], [], "the overlay was removed");
    });
  },
);

Deno.test(
  "-l exports an internal snapshot read-only, found by id or name, as qemu-nbd",
  needs("qemu-nbd", "qemu-img", "qemu-io", "nbdcopy", "nbdinfo"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "snap.qcow2");
      await check("qemu-img", ["create", "-q", "-f", "qcow2", image, "2M"]);
      await check("qemu-io", ["-c", "write -P 0x55 0 64k", image]);
      await check("qemu-img", ["snapshot", "-c", "first", image]);
      await check("qemu-io", ["-c", "write -P 0x66 0 64k", image]);
      for (const spec of ["first", "1", "snapshot.name=first", "snapshot.id=1"]) {
        await sameExport(dir, ["-l", spec, image]);
      }
      const server = await forked("denbd", dir, ["-l", "first", image]);
      try {
        const info = await check("nbdinfo", ["--json", server.uri]);
        assert.match(info, /"is_read_only": true/);
      } finally {
        await server.stop();
      }
    });
  },
);

Deno.test(
  "a writable qcow2 export locks its backing file against other writers, not readers",
  needs("qemu-img", "qemu-io"),
  async () => {
    await withTempDir(async (dir) => {
      const base = join(dir, "base.raw");
      const top = join(dir, "top.qcow2");
      await check("qemu-img", ["create", "-q", "-f", "raw", base, "4M"]);
      await check("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", top]);
      const server = await forked("denbd", dir, [top]);
      try {
        // As qemu-storage-daemon: the backing child shares neither write nor
        // resize (qemu-nbd shares write on every export; docs/compatibility.md).
        const write = await run("qemu-io", ["-f", "raw", "-c", "write 0 4k", base]);
        assert.notEqual(write.code, 0);
        assert.match(write.stderr, /Failed to get "write" lock/);
        const read = await run("qemu-io", ["-r", "-f", "raw", "-c", "read 0 4k", base]);
        assert.equal(read.code, 0, read.stderr);
        const other = await run("qemu-io", ["-f", "qcow2", "-c", "read 0 4k", top]);
        assert.match(other.stderr, /Failed to get "write" lock/);
      } finally {
        await server.stop();
      }
      const after = await run("qemu-io", ["-f", "raw", "-c", "write 0 4k", base]);
      assert.equal(after.code, 0, `the locks go with the server: ${after.stderr}`);
    });
  },
);
