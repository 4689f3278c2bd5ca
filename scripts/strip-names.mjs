// Drops the name section (function names, 0.4 MB) from the built wasm: names only label stack
// traces, and every isolate start would download and parse them. wasm-bindgen needs them while it
// runs (it finds its own functions by name), so they go after it, not at the link.
import { readFileSync, writeFileSync } from "node:fs";

const path = process.argv[2];
const wasm = readFileSync(path);

function leb128(at) {
  let value = 0;
  let shift = 0;
  for (;;) {
    const byte = wasm[at++];
    value += (byte & 0x7f) * 2 ** shift;
    shift += 7;
    if (byte < 0x80) return [value, at];
  }
}

const kept = [wasm.subarray(0, 8)];
let at = 8;
while (at < wasm.length) {
  const [size, body] = leb128(at + 1);
  const end = body + size;
  let isName = false;
  if (wasm[at] === 0) {
    const [length, name] = leb128(body);
    isName = wasm.subarray(name, name + length).toString() === "name";
  }
  if (!isName) kept.push(wasm.subarray(at, end));
  at = end;
}
writeFileSync(path, Buffer.concat(kept));
