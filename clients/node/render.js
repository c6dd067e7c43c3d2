#!/usr/bin/env node
// Renders a scenecast script through the gateway, with the contract loaded from protos/ at run time (no codegen).
import { open, readFile, rename, rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

const USAGE = `usage: node render.js SCRIPT.json OUTPUT.mp4 [--gateway host:port]
       node render.js --config [--gateway host:port]`;
const PACKAGE = 'scenecast.v1';
// Same receive limit as the Python client; MP4 chunks are ~256 KiB, so this is headroom, not a requirement.
const CHANNEL_OPTIONS = { 'grpc.max_receive_message_length': 8 * 1024 * 1024 };
const CONFIG_DEADLINE_MS = 30_000;

// camelCase field names (proto-loader's default), enums as their names (as in the JSON script), 64-bit integers as
// numbers (offsets and sizes stay far below 2^53), unset fields filled in so the printed JSON is complete, and
// `payload` naming which member of a oneof is set.
const definition = protoLoader.loadSync('scenecast/v1/render_service.proto', {
  includeDirs: [fileURLToPath(new URL('../../protos', import.meta.url))],
  enums: String, longs: Number, defaults: true, oneofs: true,
});
const { RenderService } = grpc.loadPackageDefinition(definition).scenecast.v1;

class UsageError extends Error {}

// protobufjs silently drops keys it does not know, so a misspelt or snake_case key (`visual_prompt`) would vanish
// from the request. Reject it instead, naming where it is and what was expected.
function checkKeys(value, typeName, where) {
  if (value === null || typeof value !== 'object') return;
  const fields = definition[typeName].type.field;
  for (const [key, child] of Object.entries(value)) {
    const field = fields.find((f) => f.name === key);
    if (!field) {
      throw new UsageError(`${where}${key}: unknown field (${typeName} has ${fields.map((f) => f.name).join(', ')})`);
    }
    if (field.type !== 'TYPE_MESSAGE') continue;
    const childType = definition[field.typeName] ? field.typeName : `${PACKAGE}.${field.typeName}`;
    if (field.label === 'LABEL_REPEATED' && Array.isArray(child)) {
      child.forEach((item, i) => checkKeys(item, childType, `${where}${key}[${i}].`));
    } else {
      checkKeys(child, childType, `${where}${key}.`);
    }
  }
}

// Reads the whole stream: progress to stderr, chunks into `file`. Returns the summary once the call ended with OK.
async function receive(call, file) {
  let written = 0;
  let summary = null;
  for await (const response of call) {
    const { progress, chunk } = response;
    if (response.payload === 'progress') {
      console.error(`${progress.stage} ${progress.completedSteps}/${progress.totalSteps} ${progress.message}`);
    } else if (response.payload === 'chunk') {
      // A gap or overlap means a lost or reordered message: the file would be corrupt, so stop instead.
      if (chunk.offset !== written) throw new Error(`MP4 chunk at offset ${chunk.offset}, expected ${written}`);
      await file.write(chunk.data);
      written += chunk.data.length;
    } else if (response.payload === 'summary') {
      summary = response.summary;
    }
  }
  if (summary === null) throw new Error('the render stream ended without a summary');
  if (summary.sizeBytes !== written) throw new Error(`received ${written} bytes, the summary says ${summary.sizeBytes}`);
  return summary;
}

// The MP4 is written beside the output and renamed only when complete, so OUTPUT.mp4 is never a partial file.
async function render(client, scriptPath, outputPath) {
  let request;
  try {
    request = JSON.parse(await readFile(scriptPath, 'utf8'));
  } catch (error) {
    throw new UsageError(`${scriptPath}: ${error.message}`);
  }
  checkKeys(request, `${PACKAGE}.RenderRequest`, `${scriptPath}: `);
  const partPath = `${outputPath}.part`;
  const file = await open(partPath, 'w');
  const call = client.render(request);
  // Ctrl-C cancels the call, which stops all work for the render on the gateway, then cleans up below.
  process.once('SIGINT', () => call.cancel());
  try {
    const summary = await receive(call, file);
    await file.close();
    await rename(partPath, outputPath);
    console.log(JSON.stringify(summary));
  } catch (error) {
    call.cancel(); // a no-op when the call already ended; otherwise the gateway stops rendering for nobody
    await file.close();
    await rm(partPath, { force: true });
    throw error;
  }
}

async function printConfig(client) {
  const config = await promisify(client.getConfig.bind(client))({}, { deadline: Date.now() + CONFIG_DEADLINE_MS });
  console.log(JSON.stringify(config, null, 2));
}

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      gateway: { type: 'string', default: process.env.SCENECAST_GATEWAY || '127.0.0.1:50050' },
      config: { type: 'boolean', default: false },
    },
  });
  if (positionals.length !== (values.config ? 0 : 2)) throw new UsageError(USAGE);
  const client = new RenderService(values.gateway, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  try {
    await (values.config ? printConfig(client) : render(client, ...positionals));
  } finally {
    client.close();
  }
}

// Exit 2 for a bad command line or script (as the Python CLI), 1 for a failed call.
main().catch((error) => {
  const usage = error instanceof UsageError || String(error.code).startsWith('ERR_PARSE_ARGS');
  if (typeof error.code === 'number') {
    // A gRPC status (file errors have string codes), named as grpc.status maps it back, with the server's details.
    console.error(`${grpc.status[error.code]}: ${error.details}`);
  } else if (usage) {
    console.error(error instanceof UsageError ? error.message : `${error.message}\n${USAGE}`);
  } else {
    console.error(`error: ${error.message}`);
  }
  process.exitCode = usage ? 2 : 1;
});
