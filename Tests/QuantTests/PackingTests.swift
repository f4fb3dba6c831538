import Formats
import Model
@testable import Quant
import Tensors
import TestSupport
import XCTest

final class PackingTests: XCTestCase {
    func randomCodes(_ n: Int, bits: Int, seed: UInt64) -> [UInt8] {
        var rng = SeededRNG(seed: seed)
        return (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next() & UInt64((1 << bits) - 1)) }
    }

    func testPackUnpackIdentity() throws {
        for bits in [2, 3, 4, 8] {
            for (rows, cols) in [(1, 32), (3, 64), (64, 96), (32, 576)] {
                let codes = randomCodes(rows * cols, bits: bits, seed: UInt64(bits * 1000 + cols))
                let packed = try GPTQPacking.packWeights(codes: codes, rows: rows, cols: cols, bits: bits)
                XCTAssertEqual(packed.count, cols * bits / 32 * rows)
                XCTAssertEqual(try GPTQPacking.unpackWeights(packed, rows: rows, cols: cols, bits: bits), codes, "\(bits) bits \(rows)x\(cols)")
                // Zeros (any integer 0...maxCode, including 0, which v1 stores as maxCode).
                let zeros = randomCodes(3 * cols, bits: bits, seed: UInt64(bits)).map(Float.init)
                let qz = try GPTQPacking.packZeros(zeros, groups: 3, rows: cols, bits: bits)
                XCTAssertEqual(qz.count, 3 * cols * bits / 32)
                XCTAssertEqual(try GPTQPacking.unpackZeros(qz, groups: 3, rows: cols, bits: bits), zeros)
            }
        }
    }

    /// 4 bits: code of input column i at bits 4*(i % 8) of word i / 8, per output column.
    func testFourBitLayout() throws {
        // rows 2, cols 32: row 0 codes 0,1,...,15,0,1,...; row 1 all 15.
        let codes: [UInt8] = (0..<32).map { (i: Int) -> UInt8 in UInt8(i % 16) } + [UInt8](repeating: 15, count: 32)
        let q = try GPTQPacking.packWeights(codes: codes, rows: 2, cols: 32, bits: 4)
        // qweight is [4, 2]: word w of output r at [w * 2 + r].
        XCTAssertEqual(q.map { UInt32(bitPattern: $0) },
                       [0x7654_3210, 0xFFFF_FFFF, 0xFEDC_BA98, 0xFFFF_FFFF,
                        0x7654_3210, 0xFFFF_FFFF, 0xFEDC_BA98, 0xFFFF_FFFF])
        let two = try GPTQPacking.packWeights(codes: (0..<32).map { UInt8($0 % 4) }, rows: 1, cols: 32, bits: 2)
        XCTAssertEqual(two.map { UInt32(bitPattern: $0) }, [0xE4E4_E4E4, 0xE4E4_E4E4])
        let eight = try GPTQPacking.packWeights(codes: (0..<32).map { UInt8($0 * 7) }, rows: 1, cols: 32, bits: 8)
        XCTAssertEqual(UInt32(bitPattern: eight[0]), 0x150E_0700)
    }

    /// 3 bits, AutoGPTQ's loop: word 0 = codes 0-9 at 3k, low 2 bits of code 10 at 30;
    /// word 1 = high bit of code 10 at 0, codes 11-20 at 3k+1, low bit of code 21 at 31;
    /// word 2 = high 2 bits of code 21 at 0, codes 22-31 at 3k+2. Words worked out by hand
    /// (and with a Python transcription of that loop).
    func testThreeBitStraddlingWords() throws {
        var codes: [UInt8] = (0..<32).map { (i: Int) -> UInt8 in UInt8((i * i + 3 * i + 1) % 8) }
        codes[10] = 6   // 0b110: bits 30-31 of word 0 get 0b10, bit 0 of word 1 gets 1
        codes[21] = 3   // 0b011: bit 31 of word 1 gets 1, bits 0-1 of word 2 get 0b01
        let q = try GPTQPacking.packWeights(codes: codes, rows: 1, cols: 32, bits: 3)
        XCTAssertEqual(q.map { UInt32(bitPattern: $0) }, [0xA9FC_D6E9, 0xD6E9_FCD7, 0xFCD6_E9FD])
        let periodic: [UInt8] = (0..<32).map { (i: Int) -> UInt8 in UInt8((i * 5 + 3) % 8) }
        let p = try GPTQPacking.packWeights(codes: periodic, rows: 1, cols: 32, bits: 3)
        XCTAssertEqual(p.map { UInt32(bitPattern: $0) }, [0x43C6_7543, 0x7543_C675, 0xC675_43C6])
        XCTAssertEqual(try GPTQPacking.unpackWeights(q, rows: 1, cols: 32, bits: 3), codes)
    }

    /// v1 qzeros store zero - 1 (mod 2^bits): symmetric 4-bit zero 8 → nibbles of 7; v2 the zero.
    func testZerosStoreZeroMinusOne() throws {
        let qz = try GPTQPacking.packZeros([Float](repeating: 8, count: 32), groups: 1, rows: 32, bits: 4)
        XCTAssertEqual(qz.map { UInt32(bitPattern: $0) }, [0x7777_7777, 0x7777_7777, 0x7777_7777, 0x7777_7777])
        let wrap = try GPTQPacking.packZeros([0, 1, 3] + [Float](repeating: 2, count: 29), groups: 1, rows: 32, bits: 2)
        XCTAssertEqual(UInt32(bitPattern: wrap[0]) & 0x3F, 0b10_00_11)  // 0 → 3, 1 → 0, 3 → 2
        let v2 = try GPTQPacking.packZeros([Float](repeating: 8, count: 32), groups: 1, rows: 32, bits: 4, offset: 0)
        XCTAssertEqual(UInt32(bitPattern: v2[0]), 0x8888_8888)
        // Zero 0 (an asymmetric group of weights all >= 0) wraps to 0xF in v1 and stays 0 in v2.
        let zeros: [Float] = [0, 3] + [Float](repeating: 1, count: 30)
        XCTAssertEqual(UInt32(bitPattern: try GPTQPacking.packZeros(zeros, groups: 1, rows: 32, bits: 4)[0]), 0x0000_002F)
        XCTAssertEqual(UInt32(bitPattern: try GPTQPacking.packZeros(zeros, groups: 1, rows: 32, bits: 4, offset: 0)[0]), 0x1111_1130)
        XCTAssertEqual(GPTQCheckpointFormat.v1.zeroOffset, 1)
        XCTAssertEqual(GPTQCheckpointFormat.v2.zeroOffset, 0)
        XCTAssertEqual(GPTQCheckpointFormat.written(symmetric: true), .v1)
        XCTAssertEqual(GPTQCheckpointFormat.written(symmetric: false), .v2)
        XCTAssertThrowsError(try GPTQPacking.packZeros([Float](repeating: 2.5, count: 32), groups: 1, rows: 32, bits: 4))
    }

    func testRejectsLinesNotMultipleOf32() {
        for bits in [2, 3, 4, 8] {
            XCTAssertThrowsError(try GPTQPacking.packWeights(codes: [UInt8](repeating: 0, count: 48), rows: 1, cols: 48, bits: bits)) { error in
                XCTAssertTrue("\(error)".contains("multiple of 32"), "\(error)")
            }
        }
        XCTAssertThrowsError(try GPTQPacking.packWeights(codes: [UInt8](repeating: 0, count: 32), rows: 1, cols: 32, bits: 5))
        XCTAssertThrowsError(try GPTQPacking.unpackWeights([Int32](repeating: 0, count: 5), rows: 2, cols: 32, bits: 3))
    }

    func testPackedMatrixRoundTrip() throws {
        var rng = SeededRNG(seed: 9)
        let w = Tensor(shape: [64, 576])
        rng.fillNormal(w)
        for scheme in [QuantScheme(weightBits: 3, groupSize: 128), QuantScheme(weightBits: 4, symmetric: true),
                       QuantScheme(weightBits: 2, groupSize: 32), QuantScheme(weightBits: 8, groupSize: 64)] {
            let q = RTN.quantize(w, scheme: scheme)
            for format in GPTQCheckpointFormat.allCases {
                let p = try GPTQPacking.pack(q, format: format)
                XCTAssertEqual(p.scalesShape, [q.groupCount, 64])
                let back = try GPTQPacking.unpack(p, groupSize: scheme.groupSize, symmetric: scheme.symmetric, format: format)
                XCTAssertEqual(back, q, "\(scheme) \(format)")
            }
        }
    }

    // MARK: - Checkpoints

    static let linears = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]

    /// tiny-qwen3 with every decoder linear RTN-quantized: (config, full precision, quantized).
    func quantizedTinyModel(_ scheme: QuantScheme) throws -> (ModelConfig, [String: Tensor], [String: QuantizedMatrix]) {
        let checkpoint = try Checkpoint.open(TestPaths.fixture("tiny-qwen3").path)
        var full: [String: Tensor] = [:], quantized: [String: QuantizedMatrix] = [:]
        for name in checkpoint.weights.names {
            let t = try checkpoint.weights.tensor(name)
            if Self.linears.contains(where: { name.hasSuffix($0 + ".weight") }) {
                quantized[name] = RTN.quantize(t, scheme: scheme, clipSearch: ClipSearch())
            } else {
                full[name] = t
            }
        }
        XCTAssertEqual(quantized.count, 7 * checkpoint.config.numHiddenLayers)
        return (checkpoint.config, full, quantized)
    }

    func temporaryDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-packing-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    func logits(_ config: ModelConfig, _ source: any WeightSource, _ ids: [Int]) throws -> [Float] {
        let decoder = Decoder(weights: try DecoderWeights(config: config, source: source))
        let cache = decoder.makeCache(capacities: [ids.count])
        return decoder.forward([SequenceChunk(sequence: 0, tokens: ids)], cache: cache, allLogits: true).array
    }

    func testSaveLoadIsBitIdenticalAndRunsInTheDecoder() throws {
        let scheme = QuantScheme(weightBits: 4, groupSize: 16)
        let (config, full, quantized) = try quantizedTinyModel(scheme)
        let dir = try temporaryDirectory().appendingPathComponent("tiny-w4g16")
        try QuantizedCheckpoint.save(directory: dir, config: config, fullPrecision: full, quantized: quantized,
                                     scheme: scheme, method: "rtn", extra: ["damp_percent": 0.05])

        // config.json: the model config plus transformers' GPTQ quantization_config.
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("config.json"))) as! [String: Any]
        XCTAssertEqual(json["model_type"] as? String, "qwen3")
        let q = try XCTUnwrap(json["quantization_config"] as? [String: Any])
        XCTAssertEqual(q["quant_method"] as? String, "gptq")
        XCTAssertEqual(q["bits"] as? Int, 4)
        XCTAssertEqual(q["group_size"] as? Int, 16)
        XCTAssertEqual(q["sym"] as? Bool, false)
        XCTAssertEqual(q["desc_act"] as? Bool, false)
        // Asymmetric: GPTQModel's v2 zeros, named under both keys (transformers and GPTQModel
        // disagree on which one wins).
        XCTAssertEqual(q["checkpoint_format"] as? String, "gptq_v2")
        XCTAssertEqual(q["format"] as? String, "gptq_v2")
        XCTAssertEqual(q["damp_percent"] as? Double, 0.05)
        let file = try SafeTensorsFile(url: dir.appendingPathComponent("model.safetensors"))
        // On disk the qzeros are the zeros themselves, not zero - 1.
        let downName = "model.layers.0.mlp.down_proj.weight"
        let down = try XCTUnwrap(quantized[downName])
        let storedZeros = try GPTQPacking.unpackZeros(try file.int32s("model.layers.0.mlp.down_proj.qzeros"),
                                                      groups: down.groupCount, rows: down.rows, bits: 4, offset: 0)
        XCTAssertEqual(storedZeros, down.zeros)
        XCTAssertNotEqual(try GPTQPacking.unpackZeros(try file.int32s("model.layers.0.mlp.down_proj.qzeros"),
                                                      groups: down.groupCount, rows: down.rows, bits: 4, offset: 1), down.zeros)
        XCTAssertEqual(try file.info("model.layers.0.mlp.down_proj.qweight").shape, [128 * 4 / 32, 64])
        XCTAssertEqual(try file.info("model.layers.0.mlp.down_proj.qzeros").shape, [8, 64 * 4 / 32])
        XCTAssertEqual(try file.info("model.layers.0.mlp.down_proj.scales").dtype, .F16)
        XCTAssertEqual(try file.info("model.layers.0.mlp.down_proj.g_idx").shape, [128])
        XCTAssertFalse(file.has("model.layers.0.mlp.down_proj.weight"))

        let loaded = try QuantizedCheckpoint.load(dir)
        XCTAssertEqual(loaded.config, config)
        XCTAssertEqual(loaded.scheme, scheme)
        XCTAssertEqual(loaded.weights.format, .v2)
        var inMemory = full
        for (name, m) in quantized {
            XCTAssertEqual(try loaded.weights.quantizedMatrix(name), m, name)
            let a = try loaded.weights.tensor(name), b = m.dequantized()
            XCTAssertEqual(a.shape, b.shape)
            XCTAssertTrue(zip(a.array, b.array).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(name) not bit-identical")
            inMemory[name] = b
        }
        for (name, t) in full { XCTAssertEqual(try loaded.weights.tensor(name).array, t.array, name) }
        XCTAssertEqual(Set(loaded.weights.names), Set(inMemory.keys))

        // The inference stack runs the packed checkpoint unchanged, with identical logits.
        let ids = [1, 17, 42, 99, 200, 3, 7]
        let fromMemory = try logits(config, InMemoryWeights(inMemory), ids)
        let opened = try QuantizedCheckpoint.open(dir.path)
        let fromDisk = try logits(opened.config, opened.weights, ids)
        XCTAssertEqual(fromDisk, fromMemory)
        // ...and they are not simply the full-precision logits.
        let original = try Checkpoint.open(TestPaths.fixture("tiny-qwen3").path)
        XCTAssertNotEqual(try logits(original.config, original.weights, ids), fromDisk)
        // Non-quantized directories still open through QuantizedCheckpoint.open.
        XCTAssertEqual(try QuantizedCheckpoint.open(TestPaths.fixture("tiny-qwen3").path).config, original.config)
    }

    func testThreeBitPerChannelSymmetricRoundTrip() throws {
        let scheme = QuantScheme(weightBits: 3, symmetric: true)
        let (config, full, quantized) = try quantizedTinyModel(scheme)
        let dir = try temporaryDirectory().appendingPathComponent("tiny-w3")
        try QuantizedCheckpoint.save(directory: dir, config: config, fullPrecision: full, quantized: quantized,
                                     scheme: scheme, method: "rtn")
        // Saving again replaces the directory atomically.
        try QuantizedCheckpoint.save(directory: dir, config: config, fullPrecision: full, quantized: quantized,
                                     scheme: scheme, method: "rtn")
        let loaded = try QuantizedCheckpoint.load(dir)
        XCTAssertEqual(loaded.scheme, scheme)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("config.json"))) as! [String: Any]
        let q = try XCTUnwrap(json["quantization_config"] as? [String: Any])
        XCTAssertEqual(q["group_size"] as? Int, -1)
        // Symmetric stays classic v1 (zero 4 stored as 3), which every GPTQ loader reads.
        XCTAssertEqual(q["checkpoint_format"] as? String, "gptq")
        XCTAssertEqual(q["format"] as? String, "gptq")
        XCTAssertEqual(loaded.weights.format, .v1)
        let file = try SafeTensorsFile(url: dir.appendingPathComponent("model.safetensors"))
        let qzeros = try file.int32s("model.layers.0.self_attn.q_proj.qzeros")
        XCTAssertEqual(try GPTQPacking.unpackZeros(qzeros, groups: 1, rows: qzeros.count * 32 / 3, bits: 3, offset: 0),
                       [Float](repeating: 3, count: qzeros.count * 32 / 3))
        for (name, m) in quantized {
            XCTAssertEqual(try loaded.weights.tensor(name).array, m.dequantized().array, name)
        }
        let hidden = try FileManager.default.contentsOfDirectory(atPath: dir.deletingLastPathComponent().path).filter { $0.hasPrefix(".") }
        XCTAssertEqual(hidden, [])
    }

    /// Rewrites model.safetensors with `edit` applied to its tensors (as raw Tensors/dtypes).
    func rewrite(_ dir: URL, _ edit: (inout [(name: String, tensor: Tensor, dtype: SafeTensorsDType)]) -> Void) throws {
        let url = dir.appendingPathComponent("model.safetensors")
        let file = try SafeTensorsFile(url: url)
        var entries: [(name: String, tensor: Tensor, dtype: SafeTensorsDType)] = []
        for name in file.tensorNames {
            let info = try file.info(name)
            let t = info.dtype == .I32
                ? QuantizedCheckpoint.int32Tensor(try file.int32s(name), shape: info.shape) : try file.tensor(name)
            entries.append((name, t, info.dtype))
        }
        edit(&entries)
        try SafeTensorsWriter.write(entries, metadata: ["format": "pt"], to: url)
    }

    /// Replaces text in config.json (checking that it was there).
    func editConfig(_ dir: URL, _ old: String, _ new: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let url = dir.appendingPathComponent("config.json")
        let text = try String(contentsOf: url, encoding: .utf8)
        XCTAssertTrue(text.contains(old), "config.json lacks \(old)", file: file, line: line)
        try text.replacingOccurrences(of: old, with: new).write(to: url, atomically: true, encoding: .utf8)
    }

    /// Asymmetric checkpoints rqat wrote before it switched to v2 (classic "gptq" zeros, zero - 1)
    /// still load exactly, zero-0 groups (stored as 2^bits - 1) included.
    func testReadsClassicAsymmetricCheckpoints() throws {
        let scheme = QuantScheme(weightBits: 4, groupSize: 32)
        let (config, full, rtn) = try quantizedTinyModel(scheme)
        var quantized = rtn
        let name = "model.layers.0.self_attn.q_proj.weight"
        quantized[name]!.zeros[0] = 0
        quantized[name]!.zeros[5] = 15
        let dir = try temporaryDirectory().appendingPathComponent("tiny-v1")
        try QuantizedCheckpoint.save(directory: dir, config: config, fullPrecision: full, quantized: quantized,
                                     scheme: scheme, method: "rtn")
        XCTAssertEqual(try QuantizedCheckpoint.load(dir).weights.quantizedMatrix(name), quantized[name])
        try rewrite(dir) { entries in
            for (i, entry) in entries.enumerated() where entry.name.hasSuffix(".qzeros") {
                let m = quantized[String(entry.name.dropLast(".qzeros".count)) + ".weight"]!
                let v1 = try! GPTQPacking.pack(m, format: .v1)
                entries[i].tensor = QuantizedCheckpoint.int32Tensor(v1.qzeros, shape: v1.qzerosShape)
            }
        }
        try editConfig(dir, "\"format\" : \"gptq_v2\"", "\"format\" : \"gptq\"")
        try editConfig(dir, "\"checkpoint_format\" : \"gptq_v2\"", "\"checkpoint_format\" : \"gptq\"")
        let loaded = try QuantizedCheckpoint.load(dir)
        XCTAssertEqual(loaded.weights.format, .v1)
        XCTAssertEqual(loaded.config, config)
        for (n, m) in quantized { XCTAssertEqual(try loaded.weights.quantizedMatrix(n), m, n) }
    }

    func testCorruptCheckpointsGiveOneLineErrors() throws {
        let scheme = QuantScheme(weightBits: 4, groupSize: 32)
        let (config, full, quantized) = try quantizedTinyModel(scheme)
        let dir = try temporaryDirectory().appendingPathComponent("tiny")
        func fresh() throws {
            try QuantizedCheckpoint.save(directory: dir, config: config, fullPrecision: full, quantized: quantized,
                                         scheme: scheme, method: "rtn")
        }
        func expectError(_ fragments: [String], line: UInt = #line) {
            XCTAssertThrowsError(try QuantizedCheckpoint.load(dir), line: line) { error in
                XCTAssertTrue(error is FormatError, "\(type(of: error))", line: line)
                let message = "\(error)"
                XCTAssertFalse(message.contains("\n"), message, line: line)
                for f in fragments { XCTAssertTrue(message.contains(f), "\(message) lacks \(f)", line: line) }
            }
        }
        let scales = "model.layers.0.self_attn.q_proj.scales"

        // Scales of the wrong shape (one group short).
        try fresh()
        try rewrite(dir) { entries in
            let i = entries.firstIndex { $0.name == scales }!
            entries[i].tensor = Tensor(shape: [1, 128])
        }
        expectError(["model.safetensors", scales, "[1, 128]", "[2, 128]"])

        // qweight rows that disagree with g_idx.
        try fresh()
        try rewrite(dir) { entries in
            let i = entries.firstIndex { $0.name == "model.layers.1.mlp.up_proj.g_idx" }!
            entries[i].tensor = QuantizedCheckpoint.int32Tensor([Int32](repeating: 0, count: 96), shape: [96])
        }
        expectError(["model.safetensors", "model.layers.1.mlp.up_proj.qweight"])

        // A missing tensor.
        try fresh()
        try rewrite(dir) { entries in entries.removeAll { $0.name == "model.layers.1.mlp.down_proj.qzeros" } }
        expectError(["model.safetensors", "missing tensor model.layers.1.mlp.down_proj.qzeros"])

        // Unknown bits in config.json.
        try fresh()
        let configURL = dir.appendingPathComponent("config.json")
        let text = try String(contentsOf: configURL, encoding: .utf8).replacingOccurrences(of: "\"bits\" : 4", with: "\"bits\" : 5")
        XCTAssertTrue(text.contains("\"bits\" : 5"))
        try text.write(to: configURL, atomically: true, encoding: .utf8)
        expectError(["config.json", "bits 5"])

        // Format keys that disagree: transformers would take checkpoint_format, GPTQModel format.
        try fresh()
        try editConfig(dir, "\"format\" : \"gptq_v2\"", "\"format\" : \"gptq\"")
        expectError(["config.json", "format \"gptq\"", "checkpoint_format \"gptq_v2\"", "disagree"])

        // An unknown zero format.
        try fresh()
        try editConfig(dir, "\"gptq_v2\"", "\"gptq_v3\"")
        expectError(["config.json", "\"gptq_v3\" unsupported", "gptq or gptq_v2"])

        // A g_idx entry naming a group that does not exist: caught when the tensor is read.
        try fresh()
        try rewrite(dir) { entries in
            let i = entries.firstIndex { $0.name == "model.layers.0.self_attn.k_proj.g_idx" }!
            entries[i].tensor.ptr.withMemoryRebound(to: Int32.self, capacity: 64) { $0[5] = 9 }
        }
        let weights = try QuantizedCheckpoint.load(dir).weights
        XCTAssertThrowsError(try weights.tensor("model.layers.0.self_attn.k_proj.weight")) { error in
            XCTAssertTrue("\(error)".contains("model.safetensors") && "\(error)".contains("g_idx[5] = 9"), "\(error)")
        }

        // The caller cannot override the zero format the packing used.
        XCTAssertThrowsError(try QuantizedCheckpoint.save(directory: dir, config: config, fullPrecision: full, quantized: quantized,
                                                          scheme: scheme, method: "rtn", extra: ["format": "gptq"])) { error in
            XCTAssertTrue("\(error)".contains("\"format\"") && !"\(error)".contains("\n"), "\(error)")
        }

        // Saving a matrix of another scheme is refused.
        XCTAssertThrowsError(try QuantizedCheckpoint.save(directory: dir, config: config, fullPrecision: full, quantized: quantized,
                                                          scheme: QuantScheme(weightBits: 3, groupSize: 32), method: "rtn"))
    }
}
