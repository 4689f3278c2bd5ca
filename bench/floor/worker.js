// The storage floor, not part of condaflare's Worker: it runs only under the benches, on the same
// local runtime, as a Worker of its own. `PUT /` (publish): the body streamed into R2 as it is,
// with no hashing, reading or index, then deleted. `PUT /<key>` stores a body for reads, and
// `GET /<key>` (serve) answers it with one R2 get and nothing else.
export default {
  async fetch(request, env) {
    const key = new URL(request.url).pathname.slice(1);
    if (request.method === "GET" && key) {
      const object = await env.PACKAGES.get(key);
      if (!object) return new Response("not found\n", { status: 404 });
      return new Response(object.body, { headers: { ETag: object.httpEtag } });
    }
    if (request.method !== "PUT" || !request.body) {
      return new Response("PUT a body, or GET a key\n", { status: 405 });
    }
    if (key) {
      await env.PACKAGES.put(key, request.body);
      return new Response(null, { status: 201 });
    }
    const scratch = `.bench/${crypto.randomUUID()}`;
    await env.PACKAGES.put(scratch, request.body);
    await env.PACKAGES.delete(scratch);
    return new Response(null, { status: 201 });
  },
};
