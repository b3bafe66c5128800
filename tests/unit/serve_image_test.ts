import assert from "node:assert/strict";
import { imageOptsDefinition } from "../../src/cli/serve-image.ts";

Deno.test("--image-opts: dotted QemuOpts names nest, an inline file child defaults to driver=file", () => {
  assert.deepEqual(
    imageOptsDefinition("driver=raw,offset=512,file.filename=/tmp/x.img,file.locking=off"),
    {
      driver: "raw",
      offset: 512,
      file: { driver: "file", filename: "/tmp/x.img", locking: "off" },
    },
  );
  assert.deepEqual(
    imageOptsDefinition(
      "driver=qcow2,file.driver=file,file.filename=d.qcow2,backing.driver=raw," +
        "backing.file.filename=b.img",
    ),
    {
      driver: "qcow2",
      file: { driver: "file", filename: "d.qcow2" },
      backing: { driver: "raw", file: { driver: "file", filename: "b.img" } },
    },
  );
});

Deno.test("--image-opts: errors carry qemu-nbd's 'Failed to blk_new_open' prefix", () => {
  for (
    const [text, message] of [
      ["driver=raw,file.filename=x,offset=abc", "Parameter 'offset' expects integer"],
      ["file.filename=x", "Parameter 'driver' is missing"],
      ["driver=nope,file.filename=x", "Parameter 'driver' does not accept value 'nope'"],
    ]
  ) {
    assert.throws(
      () => imageOptsDefinition(text),
      (error: Error) => error.message.startsWith(`Failed to blk_new_open '${text}': ${message}`),
      text,
    );
  }
});
