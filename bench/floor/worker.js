// The floor of the upload path, for `npm run bench -- publish`: the body streamed into R2 as it
// is, with no hashing, reading or index, then deleted. Not part of condaflare's Worker: it runs
// only under the bench, on the same local runtime, as a Worker of its own.
export default {
  async fetch(request, env) {
    if (request.method !== "PUT" || !request.body) {
      return new Response("PUT a body\n", { status: 405 });
    }
    const key = `.bench/${crypto.randomUUID()}`;
    await env.PACKAGES.put(key, request.body);
    await env.PACKAGES.delete(key);
    return new Response(null, { status: 201 });
  },
};
