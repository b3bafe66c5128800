import assert from "node:assert/strict";
import {
  type ExportReport,
  formatReportJson,
  formatReportText,
  type ServerReport,
} from "../../src/cli/export-report.ts";
import { libnbdFlags } from "../../src/cli/export-probe.ts";
import { NBD_FLAG } from "../../src/nbd/protocol.ts";

/** qemu-nbd 7.2 -A -D 'desc "x"' -x 'a b:c/d' on a 64 MiB raw image, as nbdinfo showed it. */
const QEMU_EXPORT: ExportReport = {
  name: "a b:c/d",
  description: 'desc "x"',
  size: 67108864,
  uri: "nbd://127.0.0.1:20001/a%20b%3Ac/d",
  contexts: ["base:allocation", "qemu:allocation-depth"],
  flags: NBD_FLAG.HAS_FLAGS | NBD_FLAG.SEND_FLUSH | NBD_FLAG.SEND_FUA | NBD_FLAG.SEND_TRIM |
    NBD_FLAG.SEND_WRITE_ZEROES | NBD_FLAG.SEND_DF | NBD_FLAG.SEND_CACHE | NBD_FLAG.SEND_FAST_ZERO,
  blockSizes: { minimum: 1, preferred: 4096, maximum: 33554432 },
};

const QEMU_REPORT: ServerReport = {
  protocol: "newstyle-fixed",
  tls: false,
  structured: true,
  exports: [QEMU_EXPORT],
};

Deno.test("text: nbdinfo's layout, field for field", () => {
  assert.equal(
    formatReportText(QEMU_REPORT),
    [
      "protocol: newstyle-fixed without TLS, using structured packets",
      'export="a b:c/d":',
      '\tdescription: desc "x"',
      "\texport-size: 67108864 (64M)",
      "\turi: nbd://127.0.0.1:20001/a%20b%3Ac/d",
      "\tcontexts:",
      "\t\tbase:allocation",
      "\t\tqemu:allocation-depth",
      "\tis_rotational: false",
      "\tis_read_only: false",
      "\tcan_cache: true",
      "\tcan_df: true",
      "\tcan_fast_zero: true",
      "\tcan_flush: true",
      "\tcan_fua: true",
      "\tcan_multi_conn: false",
      "\tcan_trim: true",
      "\tcan_zero: true",
      "\tblock_size_minimum: 1",
      "\tblock_size_preferred: 4096",
      "\tblock_size_maximum: 33554432",
      "",
    ].join("\n"),
  );
});

Deno.test("JSON: nbdinfo's document, byte for byte", () => {
  assert.equal(
    formatReportJson(QEMU_REPORT),
    [
      "{",
      '"protocol": "newstyle-fixed",',
      '"TLS": false,',
      '"structured": true,',
      '"exports": [',
      "\t{",
      '\t"export-name": "a b:c/d",',
      '\t"description": "desc \\"x\\"",',
      '\t"uri": "nbd://127.0.0.1:20001/a%20b%3Ac/d",',
      '\t"contexts": [',
      '\t\t"base:allocation",',
      '\t\t"qemu:allocation-depth"',
      "\t],",
      '\t"is_rotational": false,',
      '\t"is_read_only": false,',
      '\t"can_cache": true,',
      '\t"can_df": true,',
      '\t"can_fast_zero": true,',
      '\t"can_flush": true,',
      '\t"can_fua": true,',
      '\t"can_multi_conn": false,',
      '\t"can_trim": true,',
      '\t"can_zero": true,',
      '\t"block_size_minimum": 1,',
      '\t"block_size_preferred": 4096,',
      '\t"block_size_maximum": 33554432,',
      '\t"export-size": 67108864,',
      '\t"export-size-str": "64M"',
      "\t} ]",
      "}",
      "",
    ].join("\n"),
  );
});

/** nbd-server 3.24 answering NBD_OPT_INFO: size 0, no structured replies, no contexts. */
const NBD_SERVER_REPORT: ServerReport = {
  protocol: "newstyle-fixed",
  tls: false,
  structured: false,
  exports: ["disk", "other"].map((name, i) => ({
    name,
    description: "",
    size: 0,
    uri: `nbd://127.0.0.1:20005/${name}`,
    contexts: null,
    flags: NBD_FLAG.HAS_FLAGS | NBD_FLAG.SEND_WRITE_ZEROES | NBD_FLAG.CAN_MULTI_CONN |
      (i ? NBD_FLAG.READ_ONLY : 0),
  })),
};

Deno.test("several exports; no description, contexts or block sizes; a size of 0", () => {
  const text = formatReportText(NBD_SERVER_REPORT);
  assert.ok(text.startsWith("protocol: newstyle-fixed without TLS, using simple packets\n"));
  assert.ok(text.includes('export="disk":\n\texport-size: 0\n\turi: nbd://127.0.0.1:20005/disk\n'));
  assert.ok(!text.includes("contexts") && !text.includes("description") && !text.includes("block"));
  assert.ok(text.endsWith("\tcan_trim: false\n\tcan_zero: true\n"));
  const json = formatReportJson(NBD_SERVER_REPORT);
  assert.ok(json.includes('\t"export-size-str": "0"\n\t},\n\t{\n\t"export-name": "other",\n'));
  assert.ok(json.endsWith('\t"export-size-str": "0"\n\t} ]\n}\n'));
  const parsed = JSON.parse(json);
  assert.deepEqual(parsed.exports.map((e: { is_read_only: boolean }) => e.is_read_only), [
    false,
    true,
  ]);
});

Deno.test("no exports at all, and an empty context list", () => {
  const empty = { ...NBD_SERVER_REPORT, exports: [] };
  assert.equal(
    formatReportJson(empty),
    '{\n"protocol": "newstyle-fixed",\n"TLS": false,\n"structured": false,\n"exports": []\n}\n',
  );
  assert.equal(formatReportText(empty), `${formatReportText(empty).split("\n")[0]}\n`);
  const noContexts = { ...QEMU_REPORT, exports: [{ ...QEMU_EXPORT, contexts: [] }] };
  assert.ok(formatReportJson(noContexts).includes('\t"contexts": [\n\t],\n'));
  assert.ok(formatReportText(noContexts).includes("\tcontexts:\n\tis_rotational"));
});

Deno.test("libnbd's view of the flags: DF needs structured replies, fast zero needs zero", () => {
  const all = 0xfff;
  assert.equal(libnbdFlags(all, true), all);
  assert.equal(libnbdFlags(all, false), all & ~NBD_FLAG.SEND_DF);
  assert.equal(
    libnbdFlags(all & ~NBD_FLAG.SEND_WRITE_ZEROES, true),
    all & ~NBD_FLAG.SEND_WRITE_ZEROES & ~NBD_FLAG.SEND_FAST_ZERO,
  );
});

Deno.test("content: after the size in text, after the description in JSON; empty still shown", () => {
  const described = (content: string): ServerReport => ({
    ...QEMU_REPORT,
    exports: [{ ...QEMU_EXPORT, content }],
  });
  const mbr = 'DOS/MBR boot sector; "x"\tID=0x83';
  assert.ok(
    formatReportText(described(mbr)).includes(
      `\texport-size: 67108864 (64M)\n\tcontent: ${mbr}\n\turi: nbd:`,
    ),
  );
  assert.ok(
    formatReportJson(described(mbr)).includes(
      '\t"description": "desc \\"x\\"",\n' +
        '\t"content": "DOS/MBR boot sector; \\"x\\"\\u0009ID=0x83",\n\t"uri": ',
    ),
  );
  assert.equal(JSON.parse(formatReportJson(described(mbr))).exports[0].content, mbr);
  assert.ok(formatReportText(described("")).includes("(64M)\n\tcontent: \n\turi: "));
  assert.ok(formatReportJson(described("")).includes('\t"content": "",\n'));
  assert.ok(!formatReportText(QEMU_REPORT).includes("content"));
});
