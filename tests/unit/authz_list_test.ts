/** authz-simple and authz-list: exact identities, rule order, formats and the default policy. */
import assert from "node:assert/strict";
import { SimpleAuthorizer } from "../../src/authz/simple.ts";
import { ListAuthorizer } from "../../src/authz/list.ts";

const ALICE = "CN=alice,O=denbd test,C=GB";
const BOB = "CN=bob,O=denbd test,C=GB";

Deno.test("authz-simple allows its identity exactly", () => {
  const simple = new SimpleAuthorizer(ALICE);
  assert.ok(simple.isAllowed(ALICE));
  for (const other of [BOB, ALICE + " ", ALICE.toLowerCase(), "", "CN=alice"]) {
    assert.ok(!simple.isAllowed(other), other);
  }
});

Deno.test("authz-list: no rules, the policy decides (deny unless told)", () => {
  assert.ok(!new ListAuthorizer().isAllowed(ALICE));
  assert.ok(!new ListAuthorizer({ policy: "deny" }).isAllowed(ALICE));
  assert.ok(new ListAuthorizer({ policy: "allow" }).isAllowed(ALICE));
});

Deno.test("authz-list: the first matching rule wins", () => {
  const list = new ListAuthorizer({
    policy: "allow",
    rules: [
      { match: BOB, policy: "deny" },
      { match: "CN=*", policy: "allow", format: "glob" },
      { match: ALICE, policy: "deny" },
    ],
  });
  assert.ok(!list.isAllowed(BOB));
  assert.ok(list.isAllowed(ALICE), "the glob rule comes before alice's deny");
  assert.ok(list.isAllowed("O=x"), "no rule: the policy");
});

Deno.test("authz-list: exact is the default format, globs only with format glob", () => {
  const exact = new ListAuthorizer({ rules: [{ match: "CN=*", policy: "allow" }] });
  assert.ok(!exact.isAllowed(ALICE));
  assert.ok(exact.isAllowed("CN=*"));
  const glob = new ListAuthorizer({
    rules: [{ match: "CN=?lice,*", policy: "allow", format: "glob" }],
  });
  assert.ok(glob.isAllowed(ALICE));
  assert.ok(!glob.isAllowed(BOB));
});

Deno.test("authz-list: a deny rule before an allow-everyone policy", () => {
  const list = new ListAuthorizer({
    policy: "allow",
    rules: [{ match: "CN=b*", policy: "deny", format: "glob" }],
  });
  assert.ok(list.isAllowed(ALICE));
  assert.ok(!list.isAllowed(BOB));
});
