/**
 * Differential tests of `denbd daemon`'s command line: every argument list
 * here makes qemu-storage-daemon 7.2 stop before serving anything (or print
 * help and exit), and `denbd daemon` must answer it the same way: the same
 * exit code and the same stderr and stdout, once the program prefix, the
 * daemon's directory and its ports are masked. Both run in their own
 * directory with their own copies of the images.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { delay, exists, makeSparseImage, needs } from "./harness.ts";
import {
  type DaemonKind,
  type DaemonPlace,
  KINDS,
  makePlace,
  normaliseText,
  runDaemon,
} from "./daemon_harness.ts";
import { withTempDir } from "./harness.ts";

const MiB = 1 << 20;

async function images(dir: string): Promise<void> {
  await makeSparseImage(join(dir, "d.img"), 4 * MiB, [[0, 4096]]);
}

const FILE_NODE = ["--blockdev", "driver=file,node-name=f0,filename=$DIR/d.img"];
const SERVER = ["--nbd-server", "addr.type=unix,addr.path=$DIR/nbd.sock"];
const READY = [...FILE_NODE, ...SERVER];

/** Argument lists on which qsd stops at once, grouped by what they exercise. */
const CASES: Record<string, readonly (readonly string[])[]> = {
  "getopt": [
    ["--bogus"],
    ["-x"],
    ["--blockdev"],
    ["--help=x"],
    ["extra"],
    ["--object", "iothread,id=io0", "extra", "--bogus"],
    ["--blockd", "driver=file"],
    ["--blockdev=driver=file"],
  ],
  "--blockdev": [
    ["--blockdev", "file"],
    ["--blockdev", "driver=file,filename=$DIR/d.img"],
    ["--blockdev", "driver=file,node-name=1x,filename=$DIR/d.img"],
    [...FILE_NODE, ...FILE_NODE],
    ["--blockdev", "driver=file,node-name=f1,filename=/nonexistent/x"],
    ["--blockdev", '{"driver":"file"'],
    ["--blockdev", "driver=file,node-name=f1,filename=$DIR/d.img,cache.direct=maybe"],
    ["--blockdev", "driver=file,node-name=f1,filename=$DIR/d.img,cache=on"],
    ["--blockdev", "driver=file,node-name=f1,filename=$DIR/d.img,bogus=1"],
    ["--blockdev", "driver=bogus,node-name=f1"],
    ["--blockdev", "driver=file,a.b=1,a=2"],
    ["--blockdev", "driver=file,list.1=x"],
    ["--blockdev", "help"],
    [...FILE_NODE, "--blockdev", "driver=raw,node-name=r0,file=nope"],
    [...FILE_NODE, "--blockdev", "driver=raw,node-name=r0,file=f0,size=1000"],
  ],
  "--nbd-server": [
    ["--nbd-server", "unix,addr.path=$DIR/nbd.sock"],
    ["--nbd-server", "addr.type=inet,addr.host=127.0.0.1"],
    ["--nbd-server", "addr.path=$DIR/nbd.sock"],
    [...SERVER.slice(0, 1), `${SERVER[1]},max-connections=1k`],
    [...SERVER.slice(0, 1), `${SERVER[1]},max-connections=-1`],
    [...SERVER.slice(0, 1), `${SERVER[1]},tls-creds=t0`],
    ["--nbd-server", "addr.type=unix,addr.path=/nonexistent/x.sock"],
    [...SERVER, ...SERVER],
  ],
  "--export": [
    [...FILE_NODE, "--export", "nbd,id=e0,node-name=f0"],
    [...SERVER, "--export", "nbd,id=e0,node-name=f0"],
    [...READY, "--export", "nbd,node-name=f0"],
    [...READY, "--export", "nbd,id=e0"],
    [...READY, "--export", "nbd,id=e0,device=f0"],
    [...READY, "--export", "foo,id=e0,node-name=f0"],
    [...READY, "--export", "nbd,id=e0,node-name=f0,bitmap=x"],
    [...READY, "--export", "nbd,id=e0,node-name=f0,bitmaps.0=b"],
    [...READY, "--export", "nbd,id=e0,node-name=f0,bitmaps.0.node=f0,bitmaps.0.name=x"],
    [...READY, "--export", "nbd,id=e0,node-name=f0,iothread=io0"],
    [...READY, "--export", "nbd,id=e0,node-name=f0", "--export", "nbd,id=e0,node-name=f0"],
    [...READY, "--export", "nbd,id=e0,node-name=f0", "--export", "nbd,id=e1,node-name=f0"],
    [...READY, "--export", '{"type":"nbd","id":"e0","node-name":"f0","writable":"on"}'],
    [...READY, "--export", "help"],
  ],
  "--object": [
    ["--object", "iothread"],
    ["--object", "iothread,id=1x"],
    ["--object", "iothread,id=io0,bogus=1"],
    ["--object", "foo,id=x"],
    ["--object", "iothread,id=io0,poll-max-ns=abc"],
    ["--object", "iothread,id=io0,poll-max-ns=-1"],
    ["--object", "iothread,id=io0", "--object", "iothread,id=io0"],
    ["--object", "tls-creds-x509,id=t0,dir=/nonexistent,endpoint=server"],
    ["--object", "tls-creds-psk,id=t0,dir=$DIR,endpoint=server"],
    ["--object", "tls-creds-x509,id=t0,endpoint=server"],
    ["--object", "secret,id=s0"],
    ["--object", "memory-backend-ram,id=m0,size=1M"],
  ],
  "--chardev and --monitor": [
    ["--monitor", "c0"],
    ["--chardev", "socket,id=1c,path=$DIR/q.sock,server=on,wait=off"],
    ["--chardev", "socket,id=c0,bogus=1"],
    ["--chardev", "socket,id=c0,path=$DIR/q.sock,server=maybe"],
    ["--chardev", "socket,id=c0,host=127.0.0.1,server=on,wait=off"],
    ["--chardev", "id=c0,path=$DIR/q.sock"],
    ["--chardev", "foo,id=c0"],
    ["--chardev", "socket,path=$DIR/q.sock"],
    ["--chardev", "null,id=c0", "--monitor", "c0,mode=readline"],
    ["--chardev", "null,id=c0", "--monitor", "c0,mode=x"],
    ["--chardev", "null,id=c0", "--monitor", "c0,pretty"],
    ["--chardev", "null,id=c0", "--monitor", ""],
    ["--chardev", "null,id=c0", "--monitor", "c0", "--monitor", "c0"],
    ["--chardev", "null,id=c0", "--chardev", "null,id=c0"],
  ],
  "--pidfile": [
    [...FILE_NODE, "--pidfile", "/nonexistent/pid"],
  ],
  "--daemonize": [
    ["--daemonize", "--blockdev", "driver=file,node-name=f0,filename=$DIR/missing.img"],
    ["--daemonize", ...FILE_NODE, "--pidfile", "/nonexistent/pid"],
  ],
};

/** What one daemon did with one argument list, masked for comparison. */
interface Outcome {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

async function outcome(place: DaemonPlace, args: readonly string[]): Promise<Outcome> {
  const result = await runDaemon(place, args, 15_000);
  return {
    code: result.code,
    stdout: normaliseText(result.stdout, place),
    stderr: normaliseText(result.stderr, place),
  };
}

for (const [group, cases] of Object.entries(CASES)) {
  Deno.test(
    `command line, ${group}: denbd stops as qsd does`,
    needs("qemu-storage-daemon"),
    () =>
      withTempDir(async (root) => {
        const mismatches: string[] = [];
        for (const [index, args] of cases.entries()) {
          const caseRoot = join(root, String(index));
          await Deno.mkdir(caseRoot);
          const places = await Promise.all(
            KINDS.map((kind) => makePlace(caseRoot, kind, { setup: images })),
          );
          const [qsd, denbd] = await Promise.all(places.map((place) => outcome(place, args)));
          assert.notEqual(qsd.code, 0, `qsd accepted ${JSON.stringify(args)}; not an error case`);
          if (JSON.stringify(qsd) !== JSON.stringify(denbd)) {
            mismatches.push(
              `${JSON.stringify(args)}\n  qsd:   ${JSON.stringify(qsd)}\n  denbd: ${
                JSON.stringify(denbd)
              }`,
            );
          }
        }
        assert.deepEqual(mismatches, [], `denbd and qsd differ:\n${mismatches.join("\n")}`);
      }),
  );
}

Deno.test(
  "command line: -h and -V exit 0 before anything else, the first one winning",
  needs("qemu-storage-daemon"),
  () =>
    withTempDir(async (root) => {
      const places = await Promise.all(
        KINDS.map((kind) => makePlace(root, kind, {})),
      );
      const both = (args: string[]) => Promise.all(places.map((place) => runDaemon(place, args)));
      const byKind = <T>(values: T[]) =>
        Object.fromEntries(KINDS.map((kind, i) => [kind, values[i]])) as Record<DaemonKind, T>;
      const versions = byKind(await both(["-V", "-h", "--bogus-after-is-not-seen"]));
      assert.equal(versions.denbd.code, 0);
      assert.match(versions.qsd.stdout, /^qemu-storage-daemon version 7\.2/);
      assert.match(versions.denbd.stdout, /^denbd daemon version \S+ \(qemu-storage-daemon 7\.2/);
      const backends = byKind(await both(["--chardev", "help"]));
      for (const kind of KINDS) {
        assert.equal(backends[kind].code, 0);
        assert.ok(backends[kind].stdout.startsWith("Available chardev backend types: \n"));
        assert.ok(backends[kind].stdout.includes("\n  socket\n"), `${kind} lists socket`);
      }
      const helps = byKind(await both(["-h", "-V"]));
      assert.equal(helps.denbd.code, 0);
      for (const option of ["--blockdev", "--chardev", "--export", "--monitor", "--nbd-server"]) {
        assert.ok(helps.qsd.stdout.includes(option));
        assert.ok(helps.denbd.stdout.includes(option), `denbd's help names ${option}`);
      }
      // Every key qsd's help shows, denbd's shows too. (Not --export: qsd's help
      // offers nbd's "bitmap=", which its block-export-add schema spells "bitmaps".)
      for (const option of ["--blockdev", "--monitor", "--nbd-server"]) {
        const qsdKeys = helpKeys(helps.qsd.stdout, option);
        assert.ok(qsdKeys.size > 1, `qsd's help shows keys of ${option}`);
        const denbdKeys = helpKeys(helps.denbd.stdout, option);
        assert.deepEqual([...qsdKeys].filter((key) => !denbdKeys.has(key)), [], option);
      }
    }),
);

/** The keys (`node-name`, `cache.direct`) the --help text `help` shows for `option`. */
function helpKeys(help: string, option: string): Set<string> {
  const keys = new Set<string>();
  let inSection = false;
  for (const line of help.split("\n")) {
    const text = line.trimStart();
    if (text.startsWith("-")) inSection = text.startsWith(`${option} `);
    else if (!text || line === text) inSection = false;
    if (!inSection) continue;
    for (const match of text.matchAll(/([a-z][a-z0-9.-]*)=/g)) keys.add(match[1]);
  }
  return keys;
}

Deno.test(
  "command line, deliberate difference: a chardev that would connect out is refused",
  needs("qemu-storage-daemon"),
  () =>
    withTempDir(async (root) => {
      const place = await makePlace(root, "denbd", {});
      const result = await outcome(place, ["--chardev", "socket,id=c0,path=$DIR/qmp.sock"]);
      // qsd connects to the socket as a client ("Failed to connect to ..." when nobody listens).
      assert.deepEqual(result, {
        code: 1,
        stdout: "",
        stderr: "PROG: --chardev socket,id=c0,path=$DIR/qmp.sock: " +
          "denbd serves QMP only on listening sockets: add server=on\n",
      });
    }),
);

Deno.test(
  "command line: --daemonize returns once the daemon serves, which goes on until killed",
  needs("qemu-storage-daemon", "nbdinfo"),
  () =>
    withTempDir(async (root) => {
      for (const kind of KINDS) {
        const place = await makePlace(root, kind, { setup: images });
        const pidFile = join(place.dir, "daemon.pid");
        const args = [
          "--daemonize",
          ...READY,
          "--export",
          "type=nbd,id=e0,node-name=f0,name=d",
          "--pidfile",
          pidFile,
        ];
        const started = await runDaemon(place, args, 15_000);
        assert.equal(started.code, 0, `${kind}: ${started.stderr}`);
        assert.equal(started.stderr, "", `${kind} prints nothing`);
        const pid = Number((await Deno.readTextFile(pidFile)).trim());
        try {
          const uri = `nbd+unix:///d?socket=${join(place.dir, "nbd.sock")}`;
          const size = await new Deno.Command("nbdinfo", { args: ["--size", uri] }).output();
          assert.equal(new TextDecoder().decode(size.stdout).trim(), String(4 * MiB), kind);
        } finally {
          Deno.kill(pid, "SIGTERM");
        }
        for (let i = 0; i < 100 && await exists(pidFile); i++) await delay(50);
        assert.equal(await exists(pidFile), false, `${kind} removed its pid file on SIGTERM`);
      }
    }),
);
