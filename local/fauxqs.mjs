// Starts fauxqs bound to one host (its CLI always binds 0.0.0.0).
// usage: node fauxqs.mjs <fauxqs dist folder> <host> <port> <region>
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const [dist, host, port, region] = process.argv.slice(2);
const load = (file) => import(pathToFileURL(join(dist, file)).href);
const { buildApp } = await load("app.js");
const { SqsStore } = await load("sqs/sqsStore.js");
const { SnsStore } = await load("sns/snsStore.js");
const { S3Store } = await load("s3/s3Store.js");

// An empty host makes queue URLs name the address the client used (http://127.0.0.1:4576/...)
// instead of sqs.<region>.localhost, which does not resolve on most machines.
const sqsStore = new SqsStore();
sqsStore.host = "";
const stores = { sqsStore, snsStore: new SnsStore(), s3Store: new S3Store() };
const app = buildApp({ logger: false, defaultRegion: region, stores });
await app.listen({ host, port: Number(port) });
console.log(`fauxqs listening on http://${host}:${port}`);
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => app.close().then(() => process.exit(0)));
}
