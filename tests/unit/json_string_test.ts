import assert from "node:assert/strict";
import { jsonString } from "../../src/cli/json-string.ts";

Deno.test("quotes and backslashes are escaped, control characters as \\u00XX", () => {
  assert.equal(jsonString('desc "x"'), '"desc \\"x\\""');
  assert.equal(jsonString("a\\b"), '"a\\\\b"');
  assert.equal(jsonString("tab\tnew\nline\u001f"), '"tab\\u0009new\\u000aline\\u001f"');
});

Deno.test("everything else is kept as it is, and the result is valid JSON", () => {
  const text = "x!*'()~-_.;@&=+$,?#%é[]\u007f/";
  assert.equal(jsonString(text), `"${text}"`);
  const mixed = 'a"b\\c\u0000d\ne';
  assert.equal(JSON.parse(jsonString(mixed)), mixed);
});
