/**
 * `denbd serve` as a program: its command line (errors exit 1 where
 * qemu-nbd's do), its lifecycle (exit after the last client, SIGTERM with
 * requests in flight, the shared-connection limit), its pid file, image
 * locking against QEMU's tools, the demo image, and the one-file bundle.
 */

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import {
  check,
  delay,
  denbdCommand,
  exists,
  freePort,
  launch,
  makeSparseImage,
  needs,
  python,
  ROOT,
  run,
  startDenbd,
  startQemuNbd,
  startServer,
  withServer,
  withStarted,
  withTempDir,
} from "./harness.ts";

const MiB = 1024 * 1024;

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
      // The port opens a moment before the pid file is written, and the file
      // exists (created, locked) a moment before the pid is in it.
      let pid = "";
      for (let i = 0; i < 250 && !pid; i++) {
        if (await exists(pidFile)) pid = (await Deno.readTextFile(pidFile)).trim();
        if (!pid) await delay(20);
      }
      assert.equal(pid, String(server.child.pid));
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

Deno.test(
  "the one-file bundle runs by itself and serves like the sources",
  needs("nbdinfo"),
  async () => {
    await withTempDir(async (dir) => {
      const bundle = join(dir, "denbd.js");
      const built = await run(Deno.execPath(), [
        "run",
        "--allow-all",
        join(ROOT, "scripts", "bundle.ts"),
        bundle,
      ]);
      assert.equal(built.code, 0, built.stderr);
      const text = await Deno.readTextFile(bundle);
      assert.ok(text.startsWith("#!/usr/bin/env -S deno run --allow-all\n"), text.slice(0, 80));
      assert.equal((await Deno.stat(bundle)).mode! & 0o111, 0o111, "the bundle is executable");
      // Run directly, as a program: the first line finds deno on the PATH.
      const path = `${dirname(Deno.execPath())}:${Deno.env.get("PATH") ?? ""}`;
      const version = await new Deno.Command(bundle, { args: ["--version"], env: { PATH: path } })
        .output();
      assert.equal(new TextDecoder().decode(version.stdout).trim().split(" ")[0], "denbd");
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
  },
);

/** Whether something listens on TCP `port` at `host` ("0.0.0.0" or "127.0.0.1"), from /proc. */
async function tcpListeners(port: number): Promise<string[]> {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  const text = await Deno.readTextFile("/proc/net/tcp");
  return text.split("\n").slice(1).map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields[1]?.endsWith(`:${hexPort}`) && fields[3] === "0A")
    .map((fields) => fields[1].split(":")[0] === "0100007F" ? "127.0.0.1" : fields[1]);
}

Deno.test(
  "the demo image listens on 127.0.0.1 unless -b says otherwise, and says so",
  needs("nbdinfo"),
  async () => {
    const port = freePort();
    const [command, prefix] = denbdCommand();
    await withStarted(
      () =>
        launch({
          command,
          args: [...prefix, "serve", "-t", "-p", String(port)],
          uri: `nbd://127.0.0.1:${port}/`,
          listen: { hostname: "127.0.0.1", port },
        }),
      async (server) => {
        assert.deepEqual(await tcpListeners(port), ["127.0.0.1"]);
        assert.equal((await check("nbdinfo", ["--size", server.uri])).trim(), String(64 * MiB));
        assert.match(
          server.stderr(),
          new RegExp(`demo image on 127\\.0\\.0\\.1:${port} \\(reachable from this machine only`),
        );
      },
    );
  },
);

/**
 * Run `denbd ARGS`, SIGKILLed after `ms` if still running (a server blocked
 * in open(2) does not answer SIGTERM); the exit code is then null.
 */
async function runKilledAfter(
  ms: number,
  args: string[],
): Promise<{ code: number | null; stderr: string }> {
  const [command, prefix] = denbdCommand();
  const child = new Deno.Command(command, {
    args: [...prefix, ...args],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), ms);
  try {
    const output = await child.output();
    return {
      code: output.signal === null ? output.code : null,
      stderr: new TextDecoder().decode(output.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

Deno.test(
  "a FIFO, a directory or a missing file: one line naming the path, exit 1, no hang",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = join(dir, "fifo");
      await check("mkfifo", [fifo]);
      await Deno.mkdir(join(dir, "dir"));
      const cases: [string, RegExp][] = [
        [fifo, /'file' driver requires '.*fifo' to be a regular file/],
        [join(dir, "dir"), /'file' driver requires '.*dir' to be a regular file/],
        [join(dir, "missing"), /Could not open '.*missing': No such file or directory/],
      ];
      for (const [path, message] of cases) {
        for (const flags of [[], ["-r"], ["-f", "raw"], ["-r", "-f", "raw"]]) {
          const result = await runKilledAfter(15_000, [
            "serve",
            "-k",
            join(dir, "nbd.sock"),
            ...flags,
            path,
          ]);
          const what = `${flags.join(" ")} ${path}: ${result.stderr}`;
          assert.equal(result.code, 1, what);
          assert.match(result.stderr, message, what);
          assert.equal(result.stderr.trimEnd().split("\n").length, 1, what);
        }
      }
    });
  },
);

/** The command line of denbd serve under `systemd-socket-activate -l SOCKET`. */
function socketActivated(socket: string, args: string[]): [string, string[]] {
  const [command, prefix] = denbdCommand();
  return ["systemd-socket-activate", ["-l", socket, command, ...prefix, "serve", ...args]];
}

Deno.test(
  "socket activation: the socket handed over on fd 3 is served, and nothing else",
  needs("systemd-socket-activate", "nbdinfo"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 2 * MiB, [[0, 4096]]);
      const socket = join(dir, "activated.sock");
      const [command, args] = socketActivated(socket, ["-r", "-f", "raw", image]);
      const before = await tcpListeners(10809);
      const server = await launch({
        command,
        args,
        uri: `nbd+unix:///?socket=${socket}`,
        listen: socket,
      });
      try {
        assert.match(await check("nbdinfo", ["--map", server.uri]), /4096 +0 +data/);
        assert.deepEqual(await tcpListeners(10809), before, "no listener on the default port");
        assert.equal(await server.exited(), 0, server.stderr()); // after its last client, as usual
      } finally {
        await server.stop().catch(() => {});
      }
      // libnbd's own socket activation ([ CMD ]), as nbdinfo uses it for qemu-nbd.
      const [deno, prefix] = denbdCommand();
      const nbdinfoArgs = ["--size", "--", "[", deno, ...prefix, "serve", image, "]"];
      const size = await run("nbdinfo", nbdinfoArgs, {
        timeoutMs: 30_000,
      });
      assert.equal(size.stdout.trim(), String(2 * MiB), size.stderr);
    });
  },
);

Deno.test(
  "socket activation: -k, -b, -p, LISTEN_FDS > 1 and a non-socket fd 3 are refused",
  needs("qemu-nbd"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, MiB);
      const [deno, prefix] = denbdCommand();
      const activate = (count: number, program: string[], fd3: string) =>
        run("sh", [
          "-c",
          `LISTEN_PID=$$ LISTEN_FDS=${count} exec "$@" 3${fd3}`,
          "sh",
          ...program,
        ], { timeoutMs: 15_000 });
      const cases: [string[], string][] = [
        [["-k", join(dir, "x.sock")], "Unix socket can't be set when using socket activation"],
        [["-b", "127.0.0.1"], "The interface can't be set when using socket activation"],
        [["-p", "10809"], "TCP port number can't be set when using socket activation"],
      ];
      for (const [flags, message] of cases) {
        const ours = await activate(1, [deno, ...prefix, "serve", ...flags, image], "</dev/null");
        assert.equal(ours.code, 1, ours.stderr);
        assert.equal(ours.stderr, `denbd serve: ${message}\n`);
        const theirs = await activate(1, ["qemu-nbd", ...flags, image], "</dev/null");
        assert.equal(theirs.stderr, `qemu-nbd: ${message}\n`);
      }
      const two = await activate(2, [deno, ...prefix, "serve", image], "</dev/null 4</dev/null");
      assert.equal(two.code, 1);
      assert.match(two.stderr, /does not support socket activation with LISTEN_FDS > 1/);
      const notSocket = await activate(1, [deno, ...prefix, "serve", "-r", image], `<${image}`);
      assert.equal(notSocket.code, 1);
      assert.equal(
        notSocket.stderr,
        "denbd serve: Failed to use socket activation: File descriptor '3' is not a socket\n",
      );
    });
  },
);

Deno.test(
  "without FFI: writable is refused (no image lock), read-only warns of what is missing",
  needs("nbdinfo"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, MiB, [[0, 4096]]);
      const limited = [
        "run",
        "--allow-read",
        "--allow-write",
        "--allow-net",
        join(ROOT, "main.ts"),
        "serve",
      ];
      const socket = join(dir, "nbd.sock");
      const writable = await run(Deno.execPath(), [...limited, "-k", socket, "-f", "raw", image]);
      assert.equal(writable.code, 1);
      assert.match(writable.stderr, /cannot be locked against other writers without FFI/);
      assert.match(writable.stderr, /--allow-ffi/);
      assert.equal(writable.stderr.trimEnd().split("\n").length, 1, writable.stderr);
      await withStarted(
        () =>
          launch({
            command: Deno.execPath(),
            args: [...limited, "-t", "-r", "-f", "raw", "-k", socket, image],
            uri: `nbd+unix:///?socket=${socket}`,
            listen: socket,
          }),
        async (server) => {
          assert.equal((await check("nbdinfo", ["--size", server.uri])).trim(), String(MiB));
          assert.match(server.stderr(), /no image lock and no hole detection/);
          assert.equal(server.stderr().trimEnd().split("\n").length, 1, server.stderr());
        },
      );
    });
  },
);

Deno.test(
  "a probed raw image keeps block 0 raw: writes of other formats' headers get EPERM",
  needs("qemu-nbd", "qemu-img", "nbdsh"),
  async () => {
    await withTempDir(async (dir) => {
      const headers: string[] = [];
      const formats = ["qcow2", "qcow", "qed", "vmdk", "vdi", "vhdx", "vpc", "parallels"];
      for (const format of formats) {
        const path = join(dir, `h.${format}`);
        await check("qemu-img", ["create", "-q", "-f", format, path, "1M"]);
        headers.push(path);
      }
      const descriptor = join(dir, "flat.vmdk");
      await check("qemu-img", [
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "subformat=monolithicFlat",
        descriptor,
        "1M",
      ]);
      // A LUKS header as probes see it (magic, version 1): qemu-img would time
      // its key derivation first, and fails to under load.
      const luks = join(dir, "h.luks");
      const luksHeader = new Uint8Array(512);
      luksHeader.set([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe, 0x00, 0x01]);
      await Deno.writeFile(luks, luksHeader);
      const data = join(dir, "data.bin");
      await Deno.writeFile(data, new Uint8Array(512).fill(0x42));
      headers.push(descriptor, luks, data);
      const script = `
import errno, nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for path in sys.argv[2:]:
    try:
        h.pwrite(open(path, "rb").read(512).ljust(512, b"\\0"), 0)
        print("ok")
    except nbd.Error as e:
        print(errno.errorcode.get(e.errno, e.errno))
`;
      const expected = [...headers.slice(0, -1).map(() => "EPERM"), "ok"].join("\n") + "\n";
      for (const starter of [startDenbd, startQemuNbd]) {
        const image = join(dir, "disk.img");
        await makeSparseImage(image, MiB);
        await withServer(starter, { args: ["-t", image] }, async (server) => {
          const result = await python(script, [server.uri, ...headers]);
          assert.equal(result.stdout, expected, result.stderr);
          assert.match(
            server.stderr(),
            /WARNING: Image format was not specified for '.*disk\.img' and probing guessed raw\./,
          );
        });
        const written = await Deno.readFile(image);
        assert.deepEqual(written.subarray(0, 512), new Uint8Array(512).fill(0x42));
      }
      // Named with -f raw, block 0 takes anything, with no warning.
      const image = join(dir, "named.img");
      await makeSparseImage(image, MiB);
      await withServer(startDenbd, { args: ["-t", "-f", "raw", image] }, async (server) => {
        const result = await python(script, [server.uri, headers[0]]);
        assert.equal(result.stdout, "ok\n", result.stderr);
        assert.doesNotMatch(server.stderr(), /WARNING/);
      });
    });
  },
);
