// The local runtime's ceiling for `npm run bench -- serve publish`: a Worker that touches no
// storage. GET /?bytes=N answers N bytes from memory (at most 64 MiB); PUT reads the body to its
// end. Not part of condaflare's Worker: it runs only under the bench, as a Worker of its own.
const LIMIT = 64 * 1024 * 1024;
const bodies = new Map();

export default {
  async fetch(request) {
    if (request.method === "PUT" && request.body) {
      const reader = request.body.getReader();
      while (!(await reader.read()).done);
      return new Response(null, { status: 201 });
    }
    const size = Math.min(Number(new URL(request.url).searchParams.get("bytes")) || 0, LIMIT);
    if (!bodies.has(size)) {
      bodies.set(size, new Uint8Array(size));
    }
    return new Response(bodies.get(size));
  },
};
