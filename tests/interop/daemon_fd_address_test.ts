/**
 * `denbd daemon --nbd-server addr.type=fd,addr.str=N` as qemu-storage-daemon
 * takes it: the listening socket inherited as descriptor N is served (here
 * handed over by systemd-socket-activate), and a bad descriptor gets qsd's
 * message.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { check, launch, makeSparseImage, needs, run, withTempDir } from "./harness.ts";
import { type DaemonKind, daemonProgram } from "./daemon_harness.ts";

const MiB = 1024 * 1024;
const PREFIXES: Record<DaemonKind, string> = {
  qsd: "qemu-storage-daemon: ",
  denbd: "denbd daemon: ",
};

Deno.test(
  "--nbd-server addr.type=fd serves an inherited socket, as qemu-storage-daemon does",
  needs("qemu-storage-daemon", "systemd-socket-activate", "nbdinfo"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 2 * MiB, [[0, 4096]]);
      for (const kind of ["qsd", "denbd"] as const) {
        const [command, prefix] = daemonProgram(kind);
        const socket = join(dir, `${kind}.sock`);
        const args = [
          "--blockdev",
          `driver=file,node-name=f,filename=${image},read-only=on`,
          "--nbd-server",
          "addr.type=fd,addr.str=3",
          "--export",
          "type=nbd,id=e,node-name=f,name=disk",
        ];
        const daemon = await launch({
          command: "systemd-socket-activate",
          args: ["-l", socket, command, ...prefix, ...args],
          uri: `nbd+unix:///disk?socket=${socket}`,
          listen: socket,
        });
        try {
          assert.match(await check("nbdinfo", ["--map", daemon.uri]), /4096 +0 +data/, kind);
        } finally {
          await daemon.stop();
        }
        for (
          const [str, message] of [["x", "Unable to parse FD number x"], [
            "9",
            "File descriptor '9' is not a socket",
          ]]
        ) {
          const result = await run(command, [
            ...prefix,
            "--nbd-server",
            `addr.type=fd,addr.str=${str}`,
          ]);
          assert.equal(result.code, 1, `${kind}: ${result.stderr}`);
          assert.equal(
            result.stderr,
            `${PREFIXES[kind]}--nbd-server addr.type=fd,addr.str=${str}: ${message}\n`,
          );
        }
      }
    });
  },
);
