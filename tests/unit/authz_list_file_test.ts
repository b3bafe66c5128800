/**
 * authz-list-file: loading and its errors, and with refresh a reload when
 * the file changes, a file that fails to load denying everyone until it
 * loads again, and close() stopping the watcher.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ListFileAuthorizer } from "../../src/authz/list-file.ts";

const ALICE = "CN=alice,O=denbd test,C=GB";
const BOB = "CN=bob,O=denbd test,C=GB";

/** A list that allows exactly `identity`. */
function allowing(identity: string): string {
  return JSON.stringify({ policy: "deny", rules: [{ match: identity, policy: "allow" }] });
}

async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "denbd-authz-" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** What a test of a watched list gets: its directory, the file, the authorizer, its warnings. */
interface WatchedList {
  readonly dir: string;
  readonly filename: string;
  readonly authorizer: ListFileAuthorizer;
  readonly warnings: string[];
}

/** Run `body` with a watched list file that allows ALICE, closing the authorizer after. */
async function withWatchedList(body: (list: WatchedList) => Promise<void>): Promise<void> {
  await withDir(async (dir) => {
    const filename = join(dir, "list.json");
    await Deno.writeTextFile(filename, allowing(ALICE));
    const warnings: string[] = [];
    const authorizer = await ListFileAuthorizer.open({
      filename,
      warn: (message) => warnings.push(message),
    });
    try {
      await body({ dir, filename, authorizer, warnings });
    } finally {
      await authorizer.close();
    }
  });
}

/** Wait until `condition` holds (the watcher is asynchronous), failing after 5 seconds. */
async function eventually(condition: () => boolean, what: string): Promise<void> {
  for (const deadline = Date.now() + 5000; !condition();) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The message `ListFileAuthorizer.open` rejects with. */
async function openError(filename: string, refresh = false): Promise<string> {
  try {
    const authorizer = await ListFileAuthorizer.open({ filename, refresh });
    await authorizer.close();
  } catch (error) {
    return (error as Error).message;
  }
  assert.fail(`${filename} opened`);
}

Deno.test("authz-list-file: the file's rules and policy, without refresh", async () => {
  await withDir(async (dir) => {
    const filename = join(dir, "list.json");
    await Deno.writeTextFile(
      filename,
      JSON.stringify({
        policy: "allow",
        rules: [
          { match: "CN=b*", policy: "deny", format: "glob" },
          { match: ALICE, policy: "allow", format: "exact" },
        ],
      }),
    );
    const authorizer = await ListFileAuthorizer.open({ filename, refresh: false });
    assert.equal(authorizer.refresh, false);
    assert.ok(authorizer.isAllowed(ALICE));
    assert.ok(!authorizer.isAllowed(BOB));
    assert.ok(authorizer.isAllowed("CN=carol"));
    await authorizer.close();
  });
});

Deno.test("authz-list-file: an empty object denies everyone", async () => {
  await withDir(async (dir) => {
    const filename = join(dir, "list.json");
    await Deno.writeTextFile(filename, "{}");
    const authorizer = await ListFileAuthorizer.open({ filename, refresh: false });
    assert.ok(!authorizer.isAllowed(ALICE));
    await authorizer.close();
  });
});

Deno.test("authz-list-file: files that do not load, with QEMU's messages", async () => {
  await withDir(async (dir) => {
    const file = (name: string) => join(dir, name);
    const cases: [string, string, string][] = [
      ["array.json", "[]", `File '${file("array.json")}' must contain a JSON object`],
      ["policy.json", '{"policy": "maybe"}', "Parameter 'policy' does not accept value 'maybe'"],
      ["type.json", '{"policy": 1}', "Invalid parameter type for 'policy', expected: string"],
      ["extra.json", '{"colour": "red"}', "Parameter 'colour' is unexpected"],
      ["rules.json", '{"rules": {}}', "Invalid parameter type for 'rules', expected: array"],
      ["rule.json", '{"rules": [1]}', "Invalid parameter type for 'rules[0]', expected: object"],
      [
        "nomatch.json",
        '{"rules": [{"policy": "allow"}]}',
        "Parameter 'rules[0].match' is missing",
      ],
      [
        "format.json",
        '{"rules": [{"match": "x", "policy": "allow"}, {"match": "y", "policy": "deny", ' +
        '"format": "regex"}]}',
        "Parameter 'format' does not accept value 'regex'",
      ],
      [
        "member.json",
        '{"rules": [{"match": "x", "policy": "allow", "why": "test"}]}',
        "Parameter 'rules[0].why' is unexpected",
      ],
    ];
    for (const [name, text, message] of cases) {
      await Deno.writeTextFile(file(name), text);
      assert.equal(await openError(file(name)), message, name);
    }
    await Deno.writeTextFile(file("broken.json"), "{");
    assert.match(await openError(file("broken.json")), /^JSON parse error in '.*broken.json': /);
    assert.equal(
      await openError(file("none.json")),
      `Unable to read '${file("none.json")}': Failed to open file \u201c${
        file("none.json")
      }\u201d: No such file or directory`,
    );
    assert.equal(await openError(""), "filename not provided");
  });
});

Deno.test("authz-list-file: refresh is the default and needs a directory to watch", async () => {
  await withDir(async (dir) => {
    const filename = join(dir, "list.json");
    await Deno.writeTextFile(filename, allowing(ALICE));
    const authorizer = await ListFileAuthorizer.open({ filename });
    assert.equal(authorizer.refresh, true);
    await authorizer.close();
    // A bare file name (QEMU: no directory to watch) loads, then is refused.
    const cwd = Deno.cwd();
    Deno.chdir(dir);
    try {
      assert.equal(await openError("list.json", true), "Filename must be an absolute path");
      const unwatched = await ListFileAuthorizer.open({ filename: "list.json", refresh: false });
      assert.ok(unwatched.isAllowed(ALICE));
      await unwatched.close();
    } finally {
      Deno.chdir(cwd);
    }
  });
});

Deno.test("authz-list-file: with refresh, a changed file is reloaded", async () => {
  await withWatchedList(async ({ dir, filename, authorizer, warnings }) => {
    assert.ok(authorizer.isAllowed(ALICE) && !authorizer.isAllowed(BOB));
    // Rewritten in place.
    await Deno.writeTextFile(filename, allowing(BOB));
    await eventually(() => authorizer.isAllowed(BOB) && !authorizer.isAllowed(ALICE), "bob");
    // Replaced by a rename, as editors and config tools do.
    const next = join(dir, "list.json.new");
    await Deno.writeTextFile(next, allowing(ALICE));
    await Deno.rename(next, filename);
    await eventually(() => authorizer.isAllowed(ALICE) && !authorizer.isAllowed(BOB), "alice");
    // Another file in the directory changes nothing.
    await Deno.writeTextFile(join(dir, "other.json"), "[");
    assert.ok(authorizer.isAllowed(ALICE));
    assert.deepEqual(warnings, []);
  });
});

Deno.test("authz-list-file: a broken file denies everyone until it loads again", async () => {
  await withWatchedList(async ({ filename, authorizer, warnings }) => {
    await Deno.writeTextFile(filename, '{"policy": "allow", "rules": [');
    await eventually(() => !authorizer.isAllowed(ALICE), "denied");
    assert.ok(!authorizer.isAllowed(BOB));
    await eventually(() => warnings.length > 0, "a warning");
    assert.match(warnings[0], /^JSON parse error in '.*list.json': /);
    await Deno.writeTextFile(filename, allowing(ALICE));
    await eventually(() => authorizer.isAllowed(ALICE), "allowed again");
    // Removing the file keeps the list (QEMU ignores deletions).
    await Deno.remove(filename);
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.ok(authorizer.isAllowed(ALICE));
  });
});

Deno.test("authz-list-file: after close() changes are no longer followed", async () => {
  await withDir(async (dir) => {
    const filename = join(dir, "list.json");
    await Deno.writeTextFile(filename, allowing(ALICE));
    const authorizer = await ListFileAuthorizer.open({ filename });
    await authorizer.close();
    await authorizer.close();
    await Deno.writeTextFile(filename, allowing(BOB));
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.ok(authorizer.isAllowed(ALICE) && !authorizer.isAllowed(BOB));
  });
});
