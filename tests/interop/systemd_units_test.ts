/**
 * The systemd units in contrib/systemd (issue 13): systemd-analyze verifies
 * them, and each one's ExecStart line, run as systemd would run it, serves:
 * `denbd-nbd.service` on the socket `systemd-socket-activate` hands it (as
 * `denbd-nbd.socket` would), `denbd-daemon.service` on its Unix sockets.
 * The units name /usr/local/bin/denbd, /var/lib/denbd and /run/denbd; the
 * test points them at a bundle and an image of its own.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  check,
  delay,
  exists,
  freePort,
  launch,
  makeSparseImage,
  needs,
  ROOT,
  run,
  withTempDir,
} from "./harness.ts";
import { bundle } from "../../scripts/bundle.ts";

const UNITS = ["denbd-nbd.socket", "denbd-nbd.service", "denbd-daemon.service"];
const MiB = 1 << 20;

/** The units, rewritten to use `program`, `image` and `runtime` in place of the installed paths. */
async function localUnits(dir: string, program: string, image: string, runtime: string) {
  const units = new Map<string, string>();
  for (const name of UNITS) {
    const text = (await Deno.readTextFile(join(ROOT, "contrib", "systemd", name)))
      .replaceAll("/usr/local/bin/denbd", program)
      .replaceAll("/var/lib/denbd/disk.img", image)
      .replaceAll("/run/denbd", runtime);
    await Deno.writeTextFile(join(dir, name), text);
    units.set(name, text);
  }
  return units;
}

/** The command line of a unit's ExecStart (continued lines joined; the units quote nothing). */
function execStart(unit: string): string[] {
  const line = /^ExecStart=((?:.*\\\n)*.*)$/m.exec(unit);
  assert.ok(line, "the unit has an ExecStart line");
  return line[1].replaceAll("\\\n", " ").trim().split(/\s+/);
}

/** `argv` with its program, the bundle, run by this deno (the bundle's own first line would too). */
function withDeno(argv: string[]): [string, string[]] {
  return [Deno.execPath(), ["run", "--allow-all", argv[0], ...argv.slice(1)]];
}

Deno.test(
  "contrib/systemd: the units verify, and their ExecStart lines serve as systemd runs them",
  needs("systemd-analyze", "systemd-socket-activate", "nbdinfo"),
  () =>
    withTempDir(async (dir) => {
      const program = join(dir, "denbd");
      await bundle(program);
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 2 * MiB, [[0, 4096]]);
      const runtime = join(dir, "run");
      await Deno.mkdir(runtime);
      const units = await localUnits(dir, program, image, runtime);

      const verified = await run("systemd-analyze", ["verify", ...UNITS.map((u) => join(dir, u))]);
      assert.equal(verified.code, 0, verified.stderr);
      assert.equal(verified.stderr.trim(), "", "systemd-analyze has nothing to say");

      // denbd-nbd.service, handed its listening socket as denbd-nbd.socket would.
      const port = freePort();
      const [command, args] = withDeno(execStart(units.get("denbd-nbd.service")!));
      const served = await launch({
        command: "systemd-socket-activate",
        args: ["-l", `127.0.0.1:${port}`, command, ...args],
        uri: `nbd://127.0.0.1:${port}/disk`,
        listen: { hostname: "127.0.0.1", port },
      });
      try {
        assert.match(await check("nbdinfo", ["--map", served.uri]), /4096 +0 +data/);
        assert.match(await check("nbdinfo", ["--map", served.uri]), /4096 +0 +data/, "-t: again");
      } finally {
        await served.stop();
      }

      // denbd-daemon.service: NBD and QMP on the runtime directory's sockets.
      const [daemonCommand, daemonArgs] = withDeno(execStart(units.get("denbd-daemon.service")!));
      const nbdSocket = join(runtime, "nbd.sock");
      const daemon = await launch({
        command: daemonCommand,
        args: daemonArgs,
        uri: `nbd+unix:///disk?socket=${nbdSocket}`,
        listen: nbdSocket,
      });
      try {
        for (let i = 0; i < 100 && !await exists(join(runtime, "qmp.sock")); i++) await delay(50);
        assert.equal(await check("nbdinfo", ["--size", daemon.uri]), `${2 * MiB}\n`);
        await check("nbdinfo", ["--can", "write", daemon.uri]); // exits non-zero unless writable
      } finally {
        await daemon.stop();
      }
    }),
);
