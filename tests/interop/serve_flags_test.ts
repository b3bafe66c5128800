/**
 * `denbd serve` flags of issue 10 against qemu-nbd 7.2: --fork (the parent
 * returns once the server listens; failures before that reach its exit
 * code and standard error), the backup tool's command line, -o, -n, --aio,
 * --detect-zeroes, --object, --image-opts, -B and -l's refusals, each
 * message compared with qemu-nbd's own; and every flag qemu-nbd lists is
 * known (issue 13).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { delay, denbdCommand, makeSparseImage, needs, run, withTempDir } from "./harness.ts";
import { SERVE_FLAGS } from "../../src/cli/serve.ts";

const MiB = 1024 * 1024;

function denbd(...args: string[]) {
  const [command, prefix] = denbdCommand();
  return run(command, [...prefix, "serve", ...args], { timeoutMs: 20000 });
}

/** The last line of a program's standard error without its "program: " prefix. */
function lastMessage(stderr: string): string {
  const lines = stderr.trim().split("\n").filter((line) => /^(qemu-nbd|denbd serve): /.test(line));
  return (lines.at(-1) ?? "").replace(/^(qemu-nbd|denbd serve): /, "");
}

/** Stop a forked server by the pid it wrote, and wait (bounded) until it is gone. */
async function stopForked(pidFile: string): Promise<void> {
  const pid = Number((await Deno.readTextFile(pidFile)).trim());
  Deno.kill(pid, "SIGTERM");
  for (let i = 0; i < 100; i++) {
    try {
      Deno.kill(pid, "SIGCONT");
    } catch {
      return;
    }
    await delay(50);
  }
  throw new Error(`forked server ${pid} still running`);
}

Deno.test(
  "the backup tool's --fork line: exit 0 once listening, the child serves with the pid file",
  needs("qemu-nbd", "nbdinfo"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.raw");
      await makeSparseImage(image, 4 * MiB, [[0, 65536]]);
      for (const program of ["qemu-nbd", "denbd"]) {
        const socket = join(dir, `${program}.sock`);
        const pidFile = join(dir, `${program}.pid`);
        const args = [
          "-r",
          "--format=raw",
          "-x",
          "sda",
          image,
          "-k",
          socket,
          "-t",
          "-e",
          "2",
          "--fork",
          "--detect-zeroes=on",
          `--pid-file=${pidFile}`,
        ];
        const result = program === "denbd" ? await denbd(...args) : await run(program, args);
        assert.equal(result.code, 0, `${program}: ${result.stderr}`);
        try {
          const size = await run("nbdinfo", ["--size", `nbd+unix:///sda?socket=${socket}`]);
          assert.equal(size.stdout.trim(), String(4 * MiB), `${program} serves once it returned`);
          const pid = Number((await Deno.readTextFile(pidFile)).trim());
          assert.ok(pid > 0, `${program} wrote its server's pid`);
        } finally {
          await stopForked(pidFile);
        }
      }
    });
  },
);

Deno.test(
  "--fork: a failure before listening is the parent's exit code and message, as qemu-nbd's",
  needs("qemu-nbd"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.raw");
      await makeSparseImage(image, MiB);
      const cases = [
        ["-f", "raw", "-k", join(dir, "no", "such", "dir.sock"), image],
        ["-f", "raw", "-k", join(dir, "s.sock"), join(dir, "missing.img")],
      ];
      for (const args of cases) {
        const ours = await denbd("--fork", ...args);
        const reference = await run("qemu-nbd", ["--fork", ...args]);
        assert.equal(ours.code, reference.code, `${args.join(" ")}: ${ours.stderr}`);
        assert.match(ours.stderr, /No such file or directory/);
        assert.match(reference.stderr, /No such file or directory/);
      }
    });
  },
);

Deno.test(
  "refusals of -o, -n, --aio, --detect-zeroes, --object, --image-opts, -B, -l as qemu-nbd's",
  needs("qemu-nbd"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.raw");
      await makeSparseImage(image, MiB);
      const socket = join(dir, "s.sock");
      const cases = [
        ["--aio=foo", image],
        ["--aio=native", "-f", "raw", image],
        ["--detect-zeroes=unmap", image],
        ["--detect-zeroes=maybe", image],
        ["-o", "foo", image],
        ["-f", "raw", "-o", String(2 * MiB), image],
        ["--object", "foo", image],
        ["--object", "iothread,id=x,bogus=1", image],
        ["--image-opts", "-f", "raw", image],
        ["--image-opts", `driver=raw,file=${image}`],
        ["-f", "raw", "-B", "b0", image],
        ["-f", "raw", "-l", "s1", image],
      ];
      for (const args of cases) {
        const ours = await denbd("-k", socket, ...args);
        const reference = await run("qemu-nbd", ["-k", socket, ...args], { timeoutMs: 5000 });
        assert.equal(ours.code, 1, `${args.join(" ")}: ${ours.stderr}`);
        assert.equal(reference.code, 1, `qemu-nbd ${args.join(" ")}`);
        assert.equal(lastMessage(ours.stderr), lastMessage(reference.stderr), args.join(" "));
      }
    });
  },
);

Deno.test(
  "-o, --image-opts windows and --detect-zeroes=unmap serve what qemu-nbd serves",
  needs("qemu-nbd", "nbdinfo", "nbdcopy", "nbdsh"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.raw");
      await makeSparseImage(image, 4 * MiB, [[0, 65536], [MiB, 4096]]);
      const cases = [
        ["-f", "raw", "-o", "4096"],
        ["--image-opts", `driver=raw,offset=512,size=8192,file.filename=${image}`],
      ];
      for (const args of cases) {
        const files = args[0] === "--image-opts" ? [] : [image];
        const sizes: string[] = [];
        for (const program of ["qemu-nbd", "denbd"]) {
          const socket = join(dir, `${program}.sock`);
          const pidFile = join(dir, `${program}.pid`);
          const serve = ["-r", "-t", "--fork", `--pid-file=${pidFile}`, "-k", socket, ...args];
          serve.push(...files);
          const started = program === "denbd" ? await denbd(...serve) : await run(program, serve);
          assert.equal(started.code, 0, started.stderr);
          try {
            const uri = `nbd+unix:///?socket=${socket}`;
            const size = await run("nbdinfo", ["--size", uri]);
            const copy = await run("nbdcopy", [uri, join(dir, `${program}.out`)]);
            assert.equal(copy.code, 0, copy.stderr);
            sizes.push(size.stdout.trim());
          } finally {
            await stopForked(pidFile);
          }
        }
        assert.equal(sizes[0], sizes[1], args.join(" "));
        assert.deepEqual(
          await Deno.readFile(join(dir, "denbd.out")),
          await Deno.readFile(join(dir, "qemu-nbd.out")),
          args.join(" "),
        );
      }
      // detect-zeroes=unmap: a write of zeroes over data leaves a hole in the image.
      const target = join(dir, "target.raw");
      await makeSparseImage(target, MiB, [[0, MiB]]);
      const socket = join(dir, "dz.sock");
      const pidFile = join(dir, "dz.pid");
      const serve = ["--fork", `--pid-file=${pidFile}`, "-k", socket, "-f", "raw"];
      const started = await denbd(...serve, "--discard=unmap", "--detect-zeroes=unmap", target);
      assert.equal(started.code, 0, started.stderr);
      try {
        const copy = await run("nbdsh", [
          "-u",
          `nbd+unix:///?socket=${socket}`,
          "-c",
          `h.pwrite(bytearray(${MiB}), 0)`,
        ]);
        assert.equal(copy.code, 0, copy.stderr);
      } finally {
        await stopForked(pidFile);
      }
      assert.equal((await Deno.stat(target)).blocks, 0, "the zeroes were punched, not written");
    });
  },
);

Deno.test(
  "every flag qemu-nbd --help lists is one denbd serve knows: built, or 'not supported yet'",
  needs("qemu-nbd"),
  async () => {
    const help = await run("qemu-nbd", ["--help"]);
    const flags = [...help.stdout.matchAll(/^\s+(?:-\w, )?--([a-z][a-z-]*)/gm)].map((m) => m[1]);
    assert.ok(flags.length > 30, `qemu-nbd --help listed ${flags.length} flags`);
    const missing = flags.filter((flag) => !(flag in SERVE_FLAGS));
    assert.deepEqual(missing, [], "qemu-nbd flags denbd serve does not know");
    // One that is not built: refused by name, never as an unknown option.
    const trace = await denbd("-T", "nbd_*", "disk.img");
    assert.equal(trace.code, 1);
    assert.match(trace.stderr, /-T\/--trace is not supported yet/);
    assert.doesNotMatch(trace.stderr, /Unknown option/);
  },
);
