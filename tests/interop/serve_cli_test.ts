/**
 * `denbd serve` as a program: its command line (errors exit 1 where
 * qemu-nbd's do), its lifecycle (exit after the last client, SIGTERM with
 * requests in flight, the shared-connection limit), its pid file, image
 * locking against QEMU's tools, the demo image, and the one-file bundle.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  check,
  denbdCommand,
  makeSparseImage,
  needs,
  python,
  ROOT,
  run,
  startDenbd,
  startServer,
  withServer,
  withTempDir,
} from "./harness.ts";

const MiB = 1024 * 1024;

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const exists = (path: string) => Deno.stat(path).then(() => true, () => false);

function denbd(...args: string[]) {
  const [command, prefix] = denbdCommand();
  return run(command, [...prefix, ...args]);
}

Deno.test("--help lists the flags, -V prints the version", async () => {
  const help = await denbd("serve", "--help");
  assert.equal(help.code, 0);
  for (
    const flag of [
      "--port",
      "--socket",
      "--export-name",
      "--shared",
      "--cache",
      "--discard",
      "--pid-file",
      "--handshake-limit",
    ]
  ) {
    assert.ok(help.stdout.includes(flag), flag);
  }
  const version = await denbd("-V");
  assert.match(version.stdout, /^denbd \d+\.\d+\.\d+\n$/);
});

Deno.test(
  "command-line mistakes exit 1 with a clear message, as qemu-nbd's do",
  needs("qemu-nbd"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, MiB);
      const long = "a".repeat(5000);
      const cases: [string[], RegExp][] = [
        [["--bogus", image], /Unknown option '--bogus'/],
        [["-p", "abc", image], /invalid port 'abc'/],
        [["-e", "-3", image], /invalid shared device number '-3'/],
        [["--handshake-limit=-1", image], /invalid handshake limit '-1'/],
        [["--handshake-limit", "x", image], /invalid handshake limit 'x'/],
        [["--cache=foo", image], /invalid mode 'foo' for --cache/],
        [["--discard=foo", image], /invalid mode 'foo' for --discard/],
        [[image, image], /Invalid number of arguments/],
        [["-x", long, image], /export name '.*' too long/],
        [["-D", long, image], /export description '.*' too long/],
        [[join(dir, "missing.img")], /No such file|not found/i],
        [["-f", "vmdkx", image], /format 'vmdkx' is not supported/],
      ];
      for (const [args, message] of cases) {
        const ours = await denbd("serve", "-p", "0", ...args);
        assert.equal(ours.code, 1, `${args.join(" ")}: ${ours.stderr}`);
        assert.match(ours.stderr, message);
        assert.equal(ours.stderr.trim().split("\n").length <= 2, true, ours.stderr);
        const reference = await run("qemu-nbd", ["-p", "0", ...args], { timeoutMs: 5000 });
        assert.equal(reference.code, 1, `qemu-nbd ${args.join(" ")} also fails`);
      }
    });
  },
);

Deno.test("qcow2 images are refused until the qcow2 format lands", needs("qemu-img"), async () => {
  await withTempDir(async (dir) => {
    const image = join(dir, "disk.qcow2");
    await check("qemu-img", ["create", "-q", "-f", "qcow2", image, "1M"]);
    const probed = await denbd("serve", image);
    assert.equal(probed.code, 1);
    assert.match(probed.stderr, /looks like qcow2, which is not supported yet/);
    const named = await denbd("serve", "-f", "qcow2", image);
    assert.match(named.stderr, /format 'qcow2' is not supported yet/);
  });
});

Deno.test(
  "without -t the server exits 0 after its last client disconnects",
  needs("nbdinfo"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, MiB);
      const server = await startDenbd({
        args: ["-f", "raw", image],
        socket: join(dir, "nbd.sock"),
      });
      try {
        await check("nbdinfo", ["--size", server.uri]);
        assert.equal(await server.exited(), 0);
        await assert.rejects(Deno.stat(join(dir, "nbd.sock")), Deno.errors.NotFound);
      } finally {
        await server.stop().catch(() => {});
      }
    });
  },
);

Deno.test(
  "with -e 1 (the default) a second client waits for the first, as with qemu-nbd",
  needs("nbdsh"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, MiB);
      await withServer(startDenbd, { args: ["-f", "raw", "-t", image] }, async (server) => {
        const script = `
import nbd, subprocess, sys, time
first = nbd.NBD()
first.connect_uri(sys.argv[1])
second = subprocess.Popen(["nbdinfo", "--size", sys.argv[1]], stdout=subprocess.PIPE)
time.sleep(1)
print("waiting" if second.poll() is None else "served")
first.shutdown()
del first
print(second.communicate(timeout=10)[0].decode().strip())
`;
        const result = await python(script, [server.uri]);
        assert.equal(result.stdout, `waiting\n${MiB}\n`, result.stderr);
      });
    });
  },
);

Deno.test(
  "SIGTERM finishes the requests in flight, flushes and exits 0, losing no acknowledged write",
  needs("nbdsh"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 64 * MiB);
      const server = await startDenbd({ args: ["-f", "raw", "-t", image] });
      const script = `
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
M = 1024 * 1024
pending = {h.aio_pwrite(bytes([i + 1]) * M, i * M): i for i in range(64)}
acknowledged = []
def collect():
    for cookie, i in list(pending.items()):
        try:
            if h.aio_command_completed(cookie):
                acknowledged.append(i)
                del pending[cookie]
        except nbd.Error:
            del pending[cookie]
while not acknowledged:
    h.poll(-1)
    collect()
print("ready", flush=True)
sys.stdin.readline()
try:
    while h.aio_in_flight() > 0:
        h.poll(-1)
        collect()
except nbd.Error:
    pass
collect()
print(" ".join(map(str, acknowledged)))
`;
      const child = new Deno.Command("/usr/bin/python3", {
        args: ["-c", script, server.uri],
        stdin: "piped",
        stdout: "piped",
        signal: AbortSignal.timeout(30_000),
      }).spawn();
      const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      try {
        assert.match((await lines.read()).value ?? "", /ready/);
        server.child.kill("SIGTERM");
        const writer = child.stdin.getWriter();
        await writer.write(new TextEncoder().encode("go\n"));
        await writer.close();
        assert.equal(await server.exited(), 0);
        let output = "";
        for (let r = await lines.read(); !r.done; r = await lines.read()) output += r.value;
        await child.status;
        const acknowledged = output.trim().split(/\s+/).filter(Boolean).map(Number);
        assert.ok(acknowledged.includes(0));
        const bytes = await Deno.readFile(image);
        for (const i of acknowledged) {
          assert.equal(bytes[i * MiB], i + 1, `acknowledged write ${i} is on disk`);
          assert.equal(bytes[(i + 1) * MiB - 1], i + 1);
        }
      } finally {
        await server.stop().catch(() => {});
      }
    });
  },
);

Deno.test("--pid-file holds the server's process id", async () => {
  await withTempDir(async (dir) => {
    const image = join(dir, "disk.img");
    const pidFile = join(dir, "denbd.pid");
    await makeSparseImage(image, MiB);
    await withServer(startDenbd, { args: ["-t", "--pid-file", pidFile, image] }, async (server) => {
      // The port opens a moment before the pid file is written.
      for (let i = 0; i < 100 && !await exists(pidFile); i++) await delay(20);
      assert.equal((await Deno.readTextFile(pidFile)).trim(), String(server.child.pid));
    });
  });
});

Deno.test(
  "a writable image is locked like QEMU locks it: second writers refused, readers allowed",
  needs("qemu-io"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, MiB);
      await withServer(startDenbd, { args: ["-f", "raw", "-t", image] }, async () => {
        const second = await denbd("serve", "-p", "0", "-f", "raw", image);
        assert.equal(second.code, 1);
        assert.match(second.stderr, /Failed to get "write" lock/);
        assert.match(second.stderr, /Is another process using the image/);
        const writer = await run("qemu-io", ["-f", "raw", "-c", "write 0 512", image]);
        assert.notEqual(writer.code, 0);
        assert.match(writer.stderr, /Failed to get "write" lock/);
        await check("qemu-io", ["-r", "-f", "raw", "-c", "read 0 512", image]);
        await withServer(
          startDenbd,
          { args: ["-f", "raw", "-t", "-r", image] },
          () => Promise.resolve(),
        );
      });
      await check("qemu-io", ["-f", "raw", "-c", "write 0 512", image]);
    });
  },
);

Deno.test("a Unix socket export, and an IPv6 one", needs("nbdinfo"), async () => {
  await withTempDir(async (dir) => {
    const image = join(dir, "disk.img");
    await makeSparseImage(image, 2 * MiB);
    const socket = join(dir, "nbd.sock");
    await withServer(
      startDenbd,
      { args: ["-t", "-x", "u", image], socket, exportName: "u" },
      async (server) => {
        assert.equal((await check("nbdinfo", ["--size", server.uri])).trim(), String(2 * MiB));
      },
    );
    await assert.rejects(Deno.stat(socket), Deno.errors.NotFound, "socket removed at exit");
    await withServer(startDenbd, { args: ["-t", image], host: "::1" }, async (server) => {
      assert.match(server.uri, /^nbd:\/\/\[::1\]:\d+\/$/);
      assert.equal((await check("nbdinfo", ["--size", server.uri])).trim(), String(2 * MiB));
    });
  });
});

Deno.test(
  "with no FILE, a sparse demo image is served and removed on exit",
  needs("nbdsh"),
  async () => {
    await withTempDir(async (dir) => {
      const server = await startDenbd({ args: ["-t", "-v"], socket: join(dir, "nbd.sock") });
      try {
        const script = `
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
print(h.get_size())
print(h.pread(16, 0).decode())
`;
        const result = await python(script, [server.uri]);
        assert.equal(result.stdout, `${64 * MiB}\ndenbd demo image\n`, result.stderr);
      } finally {
        assert.equal(await server.stop(), 0);
      }
      const path = server.stderr().match(/serving '([^']+)'/)?.[1];
      assert.ok(path, server.stderr());
      await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
    });
  },
);

Deno.test("the one-file bundle serves like the sources", needs("nbdinfo"), async () => {
  await withTempDir(async (dir) => {
    const bundle = join(dir, "denbd.js");
    const built = await run(Deno.execPath(), [
      "bundle",
      "--quiet",
      "--output",
      bundle,
      join(ROOT, "main.ts"),
    ]);
    assert.equal(built.code, 0, built.stderr);
    const image = join(dir, "disk.img");
    await makeSparseImage(image, MiB, [[0, 4096]]);
    await withServer(
      (start) => startServer(Deno.execPath(), ["run", "--allow-all", bundle, "serve"], start),
      { args: ["-t", "-r", image] },
      async (server) => {
        assert.match(await check("nbdinfo", ["--map", server.uri]), /4096 +0 +data/);
      },
    );
  });
});
