// The storage floor for `npm run bench -- serve publish`: the least a Worker keeping packages in
// R2 can do. GET /<key> is one R2 get streamed back; PUT /<key> stores the body there (how the
// serve bench puts the bytes it reads); PUT / streams the body into R2 as it is, with no hashing,
// reading or index, then deletes it (the publish floor); PUT /?sha256=<hex> does the same with R2
// checking the body against that digest, as condaflare's single-write uploads ask. Not part of condaflare's Worker: it runs
// only under the bench, on the same local runtime, as a Worker of its own.
export default {
  async fetch(request, env) {
    const key = new URL(request.url).pathname.slice(1);
    if (request.method === "GET" && key) {
      const object = await env.PACKAGES.get(key);
      if (!object) {
        return new Response("not found\n", { status: 404 });
      }
      return new Response(object.body, { headers: { etag: object.httpEtag } });
    }
    if (request.method !== "PUT" || !request.body) {
      return new Response("GET /<key>, PUT /<key> or PUT / a body\n", { status: 405 });
    }
    if (key) {
      await env.PACKAGES.put(key, request.body);
      return new Response(null, { status: 201 });
    }
    const staged = `.bench/${crypto.randomUUID()}`;
    const sha256 = new URL(request.url).searchParams.get("sha256");
    await env.PACKAGES.put(staged, request.body, sha256 ? { sha256 } : {});
    await env.PACKAGES.delete(staged);
    return new Response(null, { status: 201 });
  },
};
