// tsclient.mjs lists the tools of an MCP endpoint with the official
// TypeScript SDK's client, as an agent built on it would. Usage:
//   node tsclient.mjs SDK_DIR URL [AUTHORIZATION]
// It prints the tool names as a JSON array, or "ERROR: " and the client's
// error message, and exits 0 either way (1 on a usage error).
const [sdkDir, url, authorization] = process.argv.slice(2);
if (!sdkDir || !url) {
  console.error("usage: node tsclient.mjs SDK_DIR URL [AUTHORIZATION]");
  process.exit(1);
}
const { Client } = await import(`${sdkDir}/dist/esm/client/index.js`);
const { StreamableHTTPClientTransport } = await import(`${sdkDir}/dist/esm/client/streamableHttp.js`);
const headers = authorization ? { Authorization: authorization } : {};
const client = new Client({ name: "metamcp-e2e-ts", version: "1.0.0" });
try {
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
  await client.connect(transport);
  const { tools } = await client.listTools();
  console.log(JSON.stringify(tools.map((t) => t.name)));
  await client.close();
} catch (err) {
  console.log("ERROR: " + (err && err.message ? err.message : String(err)));
}
