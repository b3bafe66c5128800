/**
 * authz-list: an ordered list of rules, each matching identities exactly or
 * by glob and allowing or denying them; the first rule that matches
 * decides, and the list's policy decides for identities no rule matches
 * (deny unless told, as QEMU).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ListAuthorizer } from "./list.ts";
 * const list = new ListAuthorizer({
 *   rules: [
 *     { match: "CN=mallory,*", policy: "deny", format: "glob" },
 *     { match: "CN=*", policy: "allow", format: "glob" },
 *   ],
 * });
 * assert.ok(list.isAllowed("CN=alice,O=x"));
 * assert.ok(!list.isAllowed("CN=mallory,O=x"));
 * assert.ok(!list.isAllowed("O=x"));
 * ```
 * @module
 */

import type { Authorizer } from "./authorizer.ts";
import { globMatches } from "./glob.ts";

/** QAuthZListPolicy: what a rule or the list's default does, in QEMU's order. */
export const AUTHZ_POLICIES = ["deny", "allow"] as const;

/** A policy: "deny" or "allow". */
export type AuthzPolicy = (typeof AUTHZ_POLICIES)[number];

/** QAuthZListFormat: how a rule's `match` compares with an identity, by name. */
export const AUTHZ_RULE_FORMATS = {
  /** The identity equals `match`. */
  exact: (match: string, identity: string) => match === identity,
  /** The identity matches the glob `match` (see {@linkcode globMatches}). */
  glob: globMatches,
} as const;

/** A format: "exact" or "glob". */
export type AuthzRuleFormat = keyof typeof AUTHZ_RULE_FORMATS;

/** The names of the formats, from {@linkcode AUTHZ_RULE_FORMATS}. */
export const AUTHZ_RULE_FORMAT_NAMES = Object.keys(AUTHZ_RULE_FORMATS) as AuthzRuleFormat[];

/** The format of a rule that names none (QEMU's). */
export const DEFAULT_RULE_FORMAT: AuthzRuleFormat = "exact";

/** The policy of a list that names none (QEMU's). */
export const DEFAULT_LIST_POLICY: AuthzPolicy = "deny";

/** QAuthZListRule: one rule of a list. */
export interface AuthzRule {
  /** The identity, or the glob identities must match. */
  readonly match: string;
  /** What happens to an identity that matches. */
  readonly policy: AuthzPolicy;
  /** How `match` compares; "exact" when absent. */
  readonly format?: AuthzRuleFormat;
}

/** An authz-list's properties. */
export interface AuthzListSettings {
  /** What happens to identities no rule matches; "deny" when absent. */
  readonly policy?: AuthzPolicy;
  /** The rules, first match wins. */
  readonly rules?: readonly AuthzRule[];
}

/** Allows or denies identities by a list of rules (QEMU's authz-list). */
export class ListAuthorizer implements Authorizer {
  /** The policy for identities no rule matches. */
  readonly policy: AuthzPolicy;
  /** The rules, in order. */
  readonly rules: readonly AuthzRule[];

  /** A list with `settings`' rules and policy. */
  constructor(settings: AuthzListSettings = {}) {
    this.policy = settings.policy ?? DEFAULT_LIST_POLICY;
    this.rules = [...(settings.rules ?? [])];
  }

  /** The policy of the first rule `identity` matches, else the list's policy, is "allow". */
  isAllowed(identity: string): boolean {
    const rule = this.rules.find((rule) =>
      AUTHZ_RULE_FORMATS[rule.format ?? DEFAULT_RULE_FORMAT](rule.match, identity)
    );
    return (rule?.policy ?? this.policy) === "allow";
  }

  /** Nothing to stop. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}
