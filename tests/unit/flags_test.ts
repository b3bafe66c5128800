import assert from "node:assert/strict";
import { formatFlagHelp, parseFlags, parseIntegerFlag, UsageError } from "../../src/cli/flags.ts";
import { SERVE_FLAGS, serveHelp } from "../../src/cli/serve.ts";

Deno.test("serve flags parse in qemu-nbd's spellings", () => {
  const { values, positionals } = parseFlags(SERVE_FLAGS, [
    "-p10810",
    "--bind=::1",
    "-rt",
    "-x",
    "a",
    "img",
  ]);
  assert.equal(values.port, "10810");
  assert.equal(values.bind, "::1");
  assert.equal(values["read-only"], true);
  assert.equal(values.persistent, true);
  assert.equal(values["export-name"], "a");
  assert.equal(values.shared, "1", "defaults come from the table");
  assert.deepEqual(positionals, ["img"]);
});

Deno.test("unknown flags, missing values and bad choices are usage errors", () => {
  assert.throws(() => parseFlags(SERVE_FLAGS, ["--bogus"]), UsageError);
  assert.throws(() => parseFlags(SERVE_FLAGS, ["-p"]), UsageError);
  assert.equal(
    parseFlags(SERVE_FLAGS, ["-e", "-3"]).values.shared,
    "-3",
    "values may start with -",
  );
  assert.deepEqual(parseFlags(SERVE_FLAGS, ["--", "-file"]).positionals, ["-file"]);
  assert.throws(() => parseFlags(SERVE_FLAGS, ["--cache=foo"]), /invalid mode 'foo' for --cache/);
  assert.throws(
    () => parseIntegerFlag("-3", "shared device number", 0, 10),
    /invalid shared device number '-3'/,
  );
  assert.throws(() => parseIntegerFlag("70000", "port", 0, 65535), UsageError);
  assert.equal(parseIntegerFlag("0", "port", 0, 65535), 0);
});

Deno.test("help lists every flag of the table with its default", () => {
  const help = formatFlagHelp(SERVE_FLAGS);
  for (const long of Object.keys(SERVE_FLAGS)) assert.match(help, new RegExp(`--${long}\\b`));
  assert.match(help, /-p, --port=PORT +TCP port to listen on \(default '10809'\)/);
  assert.match(serveHelp(), /^Usage: denbd serve/);
});

Deno.test("a peer's flag not built yet says so; a mistyped long flag gets the nearest", () => {
  assert.throws(
    () => parseFlags(SERVE_FLAGS, ["-c", "/dev/nbd0", "img"]),
    /^UsageError: -c\/--connect is not supported yet: /,
  );
  assert.throws(() => parseFlags(SERVE_FLAGS, ["--list"]), /--list is not supported yet/);
  assert.throws(
    () => parseFlags(SERVE_FLAGS, ["--persistant"]),
    /^UsageError: Unknown option '--persistant'; did you mean '--persistent'\?$/,
  );
  assert.throws(
    () => parseFlags(SERVE_FLAGS, ["--zzzzzz"]),
    /^UsageError: Unknown option '--zzzzzz'$/,
  );
  assert.match(formatFlagHelp(SERVE_FLAGS), /--trace=PATTERN +.*\(not supported yet\)/);
});
