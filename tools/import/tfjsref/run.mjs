#!/usr/bin/env node
// TF.js reference runtime: runs a TF.js graph model (model.json + weight
// shards on local disk) on the cpu or wasm backend and writes the requested
// tensors as .npy files. See README.md.
//
//   node run.mjs --model DIR/model.json --backend cpu|wasm \
//     --input KEY=FILE.npy [--input ...] --output KEY=TENSOR [--output ...] --out OUTDIR

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import * as tfconv from '@tensorflow/tfjs-converter';

const HERE = path.dirname(fileURLToPath(import.meta.url));

class UsageError extends Error {}

function die(msg, code = 1) {
  process.stderr.write(`run.mjs: error: ${msg}\n`);
  process.exit(code);
}

const USAGE = 'usage: node run.mjs --model DIR/model.json --backend cpu|wasm '
  + '--input KEY=FILE.npy [--input ...] --output KEY=TENSOR [--output ...] --out OUTDIR';

function parseArgs(argv) {
  const a = { model: null, backend: 'cpu', inputs: [], outputs: [], out: null };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) throw new UsageError(`${k} needs a value`);
      return argv[++i];
    };
    const pair = (s) => {
      const j = s.indexOf('=');
      if (j <= 0 || j === s.length - 1) throw new UsageError(`${k} expects KEY=VALUE, got '${s}'`);
      return [s.slice(0, j), s.slice(j + 1)];
    };
    switch (k) {
      case '--model': a.model = val(); break;
      case '--backend': a.backend = val(); break;
      case '--input': a.inputs.push(pair(val())); break;
      case '--output': a.outputs.push(pair(val())); break;
      case '--out': a.out = val(); break;
      case '-h': case '--help': process.stdout.write(USAGE + '\n'); process.exit(0); break;
      default: throw new UsageError(`unknown argument '${k}'`);
    }
  }
  if (!a.model) throw new UsageError('--model is required');
  if (!a.out) throw new UsageError('--out is required');
  if (!['cpu', 'wasm'].includes(a.backend)) throw new UsageError(`--backend must be cpu or wasm, got '${a.backend}'`);
  if (a.inputs.length === 0) throw new UsageError('at least one --input is required');
  if (a.outputs.length === 0) throw new UsageError('at least one --output is required');
  const seen = new Set();
  for (const [key] of a.outputs) {
    if (seen.has(key)) throw new UsageError(`duplicate --output key '${key}'`);
    if (!/^[A-Za-z0-9_.-]+$/.test(key)) throw new UsageError(`--output key '${key}' must match [A-Za-z0-9_.-]+ (it names a file)`);
    seen.add(key);
  }
  return a;
}

// ---------------------------------------------------------------- npy I/O

const NPY_MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // \x93NUMPY

function readNpy(file) {
  let buf;
  try { buf = fs.readFileSync(file); } catch (e) { throw new Error(`${file}: cannot read: ${e.message}`); }
  if (buf.length < 10 || !buf.subarray(0, 6).equals(NPY_MAGIC)) throw new Error(`${file}: not a .npy file (bad magic)`);
  const major = buf[6];
  let hlen; let hstart;
  if (major === 1) { hlen = buf.readUInt16LE(8); hstart = 10; } else if (major === 2 || major === 3) {
    if (buf.length < 12) throw new Error(`${file}: truncated .npy header`);
    hlen = buf.readUInt32LE(8); hstart = 12;
  } else throw new Error(`${file}: unsupported .npy format version ${major}.${buf[7]}`);
  if (hstart + hlen > buf.length) throw new Error(`${file}: truncated .npy header`);
  const header = buf.subarray(hstart, hstart + hlen).toString(major === 3 ? 'utf8' : 'latin1');
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header);
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header);
  const shapeM = /'shape'\s*:\s*\(([^)]*)\)/.exec(header);
  if (!descr || !fortran || !shapeM) throw new Error(`${file}: cannot parse .npy header: ${header.trim()}`);
  if (fortran[1] === 'True') throw new Error(`${file}: Fortran-order arrays are not supported (save with C order)`);
  const shape = shapeM[1].split(',').map((s) => s.trim()).filter((s) => s.length > 0).map((s) => {
    const n = Number(s.replace(/L$/, ''));
    if (!Number.isInteger(n) || n < 0) throw new Error(`${file}: bad shape in .npy header: (${shapeM[1]})`);
    return n;
  });
  const size = shape.reduce((x, y) => x * y, 1);
  const d = descr[1];
  let dtype; let Ctor;
  if (d === '<f4' || (d === '|f4')) { dtype = 'float32'; Ctor = Float32Array; } else if (d === '<i4' || d === '|i4') { dtype = 'int32'; Ctor = Int32Array; } else {
    throw new Error(`${file}: unsupported dtype '${d}' (need little-endian float32 '<f4' or int32 '<i4')`);
  }
  const off = hstart + hlen;
  const need = size * 4;
  if (buf.length - off < need) throw new Error(`${file}: data truncated: shape (${shape}) needs ${need} bytes, file has ${buf.length - off}`);
  // copy into an aligned buffer
  const data = new Ctor(size);
  new Uint8Array(data.buffer).set(buf.subarray(off, off + need));
  return { dtype, shape, data };
}

function writeNpy(file, shape, data /* Float32Array */) {
  const shapeStr = shape.length === 0 ? '()' : shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shapeStr}, }`;
  // version 1.0: total header (10 + len + '\n') padded to a multiple of 64
  let version = 1; let pre = 10;
  if (header.length + 1 + pre > 65535) { version = 2; pre = 12; }
  const total = Math.ceil((pre + header.length + 1) / 64) * 64;
  header = header + ' '.repeat(total - pre - header.length - 1) + '\n';
  const h = Buffer.alloc(pre);
  NPY_MAGIC.copy(h, 0);
  h[6] = version; h[7] = 0;
  if (version === 1) h.writeUInt16LE(header.length, 8); else h.writeUInt32LE(header.length, 8);
  const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  fs.writeFileSync(file, Buffer.concat([h, Buffer.from(header, 'latin1'), body]));
}

// ---------------------------------------------------------------- model I/O

// A local-file IOHandler: reads model.json and the shard files its
// weightsManifest names (relative to model.json's directory). No fetch.
function fileHandler(modelPath) {
  return {
    async load() {
      let text;
      try { text = fs.readFileSync(modelPath, 'utf8'); } catch (e) { throw new Error(`${modelPath}: cannot read model: ${e.message}`); }
      let mj;
      try { mj = JSON.parse(text); } catch (e) { throw new Error(`${modelPath}: not valid JSON: ${e.message}`); }
      if (!mj.modelTopology) throw new Error(`${modelPath}: no modelTopology: not a TF.js graph model`);
      if (!Array.isArray(mj.weightsManifest)) throw new Error(`${modelPath}: no weightsManifest`);
      const dir = path.dirname(modelPath);
      const specs = []; const parts = [];
      for (const group of mj.weightsManifest) {
        for (const p of group.paths) {
          const f = path.join(dir, p);
          let b;
          try { b = fs.readFileSync(f); } catch (e) { throw new Error(`${f}: cannot read weight shard named by ${modelPath}: ${e.message}`); }
          parts.push(b);
        }
        specs.push(...group.weights);
      }
      const all = Buffer.concat(parts);
      const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
      // check that the shards hold as many bytes as the manifest says
      let expect = 0;
      const bytesPer = { float32: 4, int32: 4, bool: 1, uint8: 1, float16: 2, int8: 1, uint16: 2, int16: 2 };
      for (const s of specs) {
        const n = (s.shape || []).reduce((x, y) => x * y, 1);
        if (s.quantization) {
          if (s.quantization.dtype === 'float16') expect += n * 2;
          else expect += n * (bytesPer[s.quantization.dtype] ?? 1);
        } else if (s.dtype === 'string') { expect = NaN; break; } else expect += n * (bytesPer[s.dtype] ?? 4);
      }
      if (!Number.isNaN(expect) && expect !== all.byteLength) {
        throw new Error(`${modelPath}: weight shards hold ${all.byteLength} bytes but the manifest describes ${expect}`);
      }
      return {
        modelTopology: mj.modelTopology,
        format: mj.format,
        generatedBy: mj.generatedBy,
        convertedBy: mj.convertedBy,
        signature: mj.signature,
        userDefinedMetadata: mj.userDefinedMetadata,
        modelInitializer: mj.modelInitializer,
        initializerSignature: mj.initializerSignature,
        weightSpecs: specs,
        weightData,
      };
    },
  };
}

// ---------------------------------------------------------------- main

async function setBackend(name) {
  if (name === 'wasm') {
    const dir = path.join(HERE, 'node_modules', '@tensorflow', 'tfjs-backend-wasm', 'dist');
    if (!fs.existsSync(path.join(dir, 'tfjs-backend-wasm.wasm'))) {
      throw new Error(`${dir}/tfjs-backend-wasm.wasm not found: run 'npm ci' in ${HERE}`);
    }
    // Node's emscripten loader reads these as file paths (a trailing slash is needed).
    setWasmPaths(dir + path.sep);
  }
  const ok = await tf.setBackend(name);
  await tf.ready();
  if (!ok || tf.getBackend() !== name) throw new Error(`could not initialise backend '${name}' (active: ${tf.getBackend()})`);
}

async function main() {
  let args;
  try { args = parseArgs(process.argv.slice(2)); } catch (e) {
    if (e instanceof UsageError) die(`${e.message}\n${USAGE}`, 2);
    throw e;
  }
  const modelPath = path.resolve(args.model);
  if (!fs.existsSync(modelPath)) die(`${modelPath}: model file not found`);

  const inputs = {};
  const inputFiles = {};
  for (const [key, file] of args.inputs) {
    let arr;
    try { arr = readNpy(file); } catch (e) { die(e.message); }
    inputFiles[key] = file;
    inputs[key] = arr;
  }

  // PROD silences tfjs's "looks like you are running TensorFlow.js in Node.js" banner
  tf.env().set('PROD', true);
  await setBackend(args.backend);

  let model;
  try {
    model = await tfconv.loadGraphModel(fileHandler(modelPath));
  } catch (e) { die(`${modelPath}: cannot load graph model: ${e.message}`); }

  // A model whose input batch is fixed at 1 is fed a larger batch one row
  // at a time, and its outputs are concatenated.
  let rows = 0;
  const feed = {};
  const known = new Set(model.inputs.map((t) => t.name));
  for (const [key, arr] of Object.entries(inputs)) {
    const bare = key.replace(/:0$/, '');
    if (!known.has(key) && !known.has(bare) && !model.inputNodes.includes(bare)) {
      die(`--input ${key}=${inputFiles[key]}: '${key}' is not an input of ${modelPath} (inputs: ${[...known].join(', ')})`);
    }
    const spec = model.inputs.find((t) => t.name === key || t.name === bare);
    if (spec && spec.shape) {
      if (spec.shape[0] === 1 && arr.shape[0] > 1) rows = arr.shape[0];
      const bad = spec.shape.length !== arr.shape.length
        || spec.shape.some((d, i) => i > 0 && d != null && d !== -1 && d !== arr.shape[i])
        || (spec.shape[0] != null && spec.shape[0] !== -1 && spec.shape[0] !== 1 && spec.shape[0] !== arr.shape[0]);
      if (bad) die(`${inputFiles[key]}: shape [${arr.shape}] does not fit input '${key}' of shape [${spec.shape.map((d) => (d == null || d === -1 ? '?' : d))}]`);
    }
    if (spec && spec.dtype && spec.dtype !== arr.dtype) {
      die(`${inputFiles[key]}: dtype ${arr.dtype} but input '${key}' wants ${spec.dtype}`);
    }
    feed[key] = tf.tensor(arr.data, arr.shape, arr.dtype);
  }

  const names = args.outputs.map(([, t]) => t);
  const run = (f) => {
    try {
      const r = model.execute(f, names);
      return Array.isArray(r) ? r : [r];
    } catch (e) { return die(`${modelPath}: execute failed for outputs [${names.join(', ')}]: ${e.message}`); }
  };
  let results;
  if (rows > 0) {
    const per = [];
    for (let i = 0; i < rows; i++) {
      const f = {};
      for (const [k, t] of Object.entries(feed)) f[k] = tf.slice(t, [i], [1]);
      per.push(run(f));
    }
    results = names.map((_, j) => tf.concat(per.map((r) => r[j]), 0));
  } else {
    results = run(feed);
  }

  fs.mkdirSync(args.out, { recursive: true });
  const shapes = {};
  for (let i = 0; i < args.outputs.length; i++) {
    const [key] = args.outputs[i];
    const t = results[i].dtype === 'float32' ? results[i] : results[i].cast('float32');
    const data = await t.data();
    writeNpy(path.join(args.out, `output_${key}.npy`), t.shape, data instanceof Float32Array ? data : Float32Array.from(data));
    shapes[key] = t.shape;
  }
  process.stdout.write(JSON.stringify({ backend: tf.getBackend(), outputs: shapes }) + '\n');
}

main().catch((e) => die(e && e.message ? e.message : String(e)));
