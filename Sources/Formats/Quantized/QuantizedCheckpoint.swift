import Foundation
import Tensors
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A GPTQ checkpoint directory (the format transformers / GPTQModel / AutoGPTQ load):
///
///     model.safetensors   per quantized linear `P.weight`: P.qweight, P.qzeros, P.scales, P.g_idx
///                         (see `GPTQPackedMatrix`); everything else (embeddings, norms, lm_head,
///                         biases) full precision under its usual name
///     config.json         the ModelConfig plus "quantization_config" {"quant_method": "gptq", ...};
///                         zeros in the format `GPTQCheckpointFormat.written(symmetric:)` picks
///     (extra files, e.g. tokenizer.json)
///
/// Loading gives a `WeightSource` that dequantizes to fp32 under the usual `P.weight` names, so
/// the inference stack runs a packed checkpoint unchanged; the values are bit-identical to the
/// in-memory `QuantizedMatrix.dequantized()` that was saved.
package enum QuantizedCheckpoint {
    /// Saves atomically: everything goes to a hidden sibling directory, which is renamed to
    /// `directory` once complete (an existing one is moved aside first, then deleted).
    ///
    /// - quantized: keyed by HF weight name (`model.layers.0.self_attn.q_proj.weight`); each must
    ///   follow `scheme` (bits, group size, symmetry).
    /// - fullPrecision: every other tensor, written as `fullPrecisionDType` (F32 keeps logits exact).
    /// - extra: merged into quantization_config last (e.g. "damp_percent", "desc_act"); not the
    ///   format keys, which must describe the packed zeros.
    /// - activationQuant: the run-time activation / KV quantization recorded for a scheme with
    ///   such bits; nil = the scheme's defaults (`ActivationQuantSpec(scheme:)`).
    package static func save(directory: URL, config: ModelConfig, fullPrecision: [String: Tensor],
                            quantized: [String: QuantizedMatrix], scheme: QuantScheme, method: String,
                            extra: [String: Any] = [:], extraFiles: [URL] = [],
                            fullPrecisionDType: SafeTensorsDType = .F32, activationQuant: ActivationQuantSpec? = nil) throws {
        let path = directory.path
        guard let bits = scheme.weightBits else { throw FormatError(path, "cannot save: scheme \(scheme) has no weight bits") }
        if let key = extra.keys.first(where: Self.formatKeys.contains) {
            throw FormatError(path, "cannot save: extra quantization_config key \"\(key)\" names the zero format, which the scheme decides; drop it")
        }
        var entries: [(name: String, tensor: Tensor, dtype: SafeTensorsDType)] = []
        var taken = Set(fullPrecision.keys)
        for name in fullPrecision.keys.sorted() { entries.append((name, fullPrecision[name]!, fullPrecisionDType)) }
        let format = GPTQCheckpointFormat.written(symmetric: scheme.symmetric)
        var actOrder = false
        for name in quantized.keys.sorted() {
            let m = quantized[name]!
            guard name.hasSuffix(".weight") else {
                throw FormatError(path, "cannot save \(name): quantized tensors must be named <module>.weight")
            }
            guard m.bits == bits, m.groupSize == scheme.groupSize, m.symmetric == scheme.symmetric else {
                throw FormatError(path, "cannot save \(name): quantized as \(m.scheme), the checkpoint's scheme is \(scheme)")
            }
            let prefix = String(name.dropLast(".weight".count))
            let packed: GPTQPackedMatrix
            do { packed = try GPTQPacking.pack(m, format: format) } catch {
                throw FormatError(path, "cannot save \(name): \(error)")
            }
            actOrder = actOrder || m.hasPermutedGroups
            for (suffix, tensor, dtype) in [
                ("qweight", int32Tensor(packed.qweight, shape: packed.qweightShape), SafeTensorsDType.I32),
                ("qzeros", int32Tensor(packed.qzeros, shape: packed.qzerosShape), .I32),
                ("scales", Tensor(shape: packed.scalesShape, values: packed.scales), .F16),
                ("g_idx", int32Tensor(packed.gIdx, shape: packed.gIdxShape), .I32),
            ] {
                let tensorName = prefix + "." + suffix
                guard taken.insert(tensorName).inserted, !fullPrecision.keys.contains(name) else {
                    throw FormatError(path, "cannot save: \(name) is given both quantized and in full precision")
                }
                entries.append((tensorName, tensor, dtype))
            }
        }

        var quantizationConfig: [String: Any] = [
            "quant_method": "gptq",
            "bits": bits,
            "group_size": scheme.groupSize ?? -1,
            "desc_act": actOrder,
            "sym": scheme.symmetric,
            // Both keys, equal: transformers' GPTQConfig lets checkpoint_format override format,
            // GPTQModel reads format first, AutoGPTQ knows only checkpoint_format.
            "checkpoint_format": format.rawValue,
            "format": format.rawValue,
            "true_sequential": true,
            "damp_percent": 0.01,
            "static_groups": false,
            "meta": ["quantizer": ["rqat"], "method": method, "scheme": scheme.description] as [String: Any],
        ]
        if let spec = activationQuant ?? ActivationQuantSpec(scheme: scheme) { quantizationConfig[ActivationQuantSpec.configKey] = spec.jsonObject }
        for (k, v) in extra { quantizationConfig[k] = v }
        guard JSONSerialization.isValidJSONObject(quantizationConfig) else {
            throw FormatError(path, "cannot save: the extra quantization_config values are not all JSON values")
        }
        let configData = try JSONEncoder().encode(config)
        guard var configObject = try JSONSerialization.jsonObject(with: configData) as? [String: Any] else {
            throw FormatError(path, "cannot save: the model config does not encode to a JSON object")
        }
        configObject["quantization_config"] = quantizationConfig
        let configJSON = try JSONSerialization.data(withJSONObject: configObject,
                                                    options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])

        try DurableFiles.writeDirectory(directory) { temp in
            try SafeTensorsWriter.write(entries, metadata: ["format": "pt", "quantizer": "rqat", "method": method],
                                        to: temp.appendingPathComponent("model.safetensors"))
            try DurableFiles.write(configJSON, to: temp.appendingPathComponent("config.json"))
            for file in extraFiles {
                guard let data = try? Data(contentsOf: file) else {
                    throw FormatError(file.path, "cannot read (to copy into the quantized checkpoint)")
                }
                try DurableFiles.write(data, to: temp.appendingPathComponent(file.lastPathComponent))
            }
        }
    }

    /// The config, the weight scheme and the dequantizing weights of a GPTQ checkpoint directory.
    /// Every quantized tensor's presence, dtype and shape is checked here (no data is read).
    package static func load(_ directory: URL) throws -> (config: ModelConfig, scheme: QuantScheme, weights: GPTQWeights) {
        let configURL = directory.appendingPathComponent("config.json")
        let config = try ModelConfig.load(configURL)
        guard let q = quantizationConfig(configURL) else {
            throw FormatError(configURL.path, "no GPTQ quantization_config (\"quant_method\": \"gptq\"); not a quantized checkpoint")
        }
        let weights = try GPTQWeights(directory: directory, quantizationConfig: q, configPath: configURL.path)
        return (config, weights.scheme, weights)
    }

    /// The quantization_config keys that name the zero format (`GPTQCheckpointFormat`).
    static let formatKeys = ["format", "checkpoint_format"]

    /// The "quantization_config" of a config.json when its quant_method is gptq; nil otherwise.
    package static func quantizationConfig(_ configURL: URL) -> [String: Any]? {
        guard let data = try? Data(contentsOf: configURL),
              let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let q = object["quantization_config"] as? [String: Any],
              (q["quant_method"] as? String)?.lowercased() == "gptq" else { return nil }
        return q
    }

    /// A Tensor whose 4-byte elements hold these Int32 bit patterns (for SafeTensorsWriter's I32).
    static func int32Tensor(_ values: [Int32], shape: [Int]) -> Tensor {
        let t = Tensor(shape: shape)
        precondition(t.count == values.count, "\(values.count) values for shape \(shape)")
        values.withUnsafeBytes { if !$0.isEmpty { UnsafeMutableRawPointer(t.ptr).copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
        return t
    }
}

/// The weights of a GPTQ checkpoint as fp32: quantized linears dequantized under `P.weight`,
/// everything else as stored. `quantizedMatrix(_:)` gives the integer form.
package final class GPTQWeights: WeightSource {
    package let path: String
    package let names: [String]
    package let scheme: QuantScheme
    /// How the stored qzeros encode the zeros (v1: zero - 1, v2: as they are).
    package let format: GPTQCheckpointFormat
    package let quantizationConfig: [String: Any]
    private let stored: SafeTensorsWeights
    /// `P.weight` → (file, P, rows, cols) for quantized linears.
    private var layers: [String: (file: SafeTensorsFile, prefix: String, rows: Int, cols: Int)] = [:]

    package init(directory: URL, quantizationConfig q: [String: Any], configPath: String) throws {
        path = directory.path
        quantizationConfig = q
        func int(_ key: String) -> Int? { (q[key] as? NSNumber).flatMap { Int(exactly: $0.doubleValue) } }
        guard let bits = int("bits") else { throw FormatError(configPath, "quantization_config has no integer \"bits\"") }
        guard QuantScheme.supportedWeightBits.contains(bits) else {
            throw FormatError(configPath, "quantization_config bits \(bits) unsupported (GPTQ checkpoints here: 2, 3, 4, 8)")
        }
        let groupSize = int("group_size") ?? -1
        guard groupSize == -1 || groupSize > 0 else {
            throw FormatError(configPath, "quantization_config group_size \(groupSize) must be positive or -1 (per channel)")
        }
        let symmetric = (q["sym"] as? Bool) ?? true
        scheme = QuantScheme(weightBits: bits, groupSize: groupSize == -1 ? nil : groupSize, symmetric: symmetric)
        // Loaders disagree on which key wins (see save), so two different values are refused.
        let declared = QuantizedCheckpoint.formatKeys.compactMap { key in (q[key] as? String).map { (key, $0.lowercased()) } }
        if let (key, value) = declared.first(where: { $0.1 != declared[0].1 }) {
            throw FormatError(configPath, "quantization_config \(declared[0].0) \"\(declared[0].1)\" and \(key) \"\(value)\" disagree; set both to the format the qzeros are in")
        }
        let name = declared.first?.1 ?? GPTQCheckpointFormat.v1.rawValue
        guard let format = GPTQCheckpointFormat(rawValue: name) else {
            throw FormatError(configPath, "quantization_config \(declared[0].0) \"\(name)\" unsupported (\(GPTQCheckpointFormat.allCases.map(\.rawValue).joined(separator: " or ")))")
        }
        self.format = format

        stored = try SafeTensorsWeights(directory: directory)
        var names: [String] = []
        var listed = Set<String>()
        let suffixes = ["qweight", "qzeros", "scales", "g_idx"]
        for name in stored.names {
            guard let dot = name.lastIndex(of: "."), suffixes.contains(String(name[name.index(after: dot)...])) else {
                names.append(name)
                continue
            }
            let prefix = String(name[..<dot])
            let weightName = prefix + ".weight"
            guard listed.insert(weightName).inserted else { continue }
            guard let file = stored.files.first(where: { $0.has(prefix + ".qweight") }) else {
                throw FormatError(path, "missing tensor \(prefix).qweight (\(name) is present)")
            }
            if stored.has(weightName) {
                throw FormatError(file.path, "both \(weightName) and \(prefix).qweight are present")
            }
            let (rows, cols) = try Self.checkShapes(file: file, prefix: prefix, bits: bits, scheme: scheme)
            layers[weightName] = (file, prefix, rows, cols)
            names.append(weightName)
        }
        self.names = names
    }

    /// Checks dtypes and shapes of P.qweight/qzeros/scales/g_idx; returns (rows, cols).
    private static func checkShapes(file: SafeTensorsFile, prefix: String, bits: Int, scheme: QuantScheme) throws -> (Int, Int) {
        func info(_ suffix: String, _ dtypes: [SafeTensorsDType]) throws -> SafeTensorsInfo {
            guard file.has(prefix + "." + suffix) else {
                throw FormatError(file.path, "missing tensor \(prefix).\(suffix) (GPTQ layers need qweight, qzeros, scales, g_idx)")
            }
            let i = try file.info(prefix + "." + suffix)
            guard dtypes.contains(i.dtype) else {
                throw FormatError(file.path, "tensor \(i.name) has dtype \(i.dtype.rawValue), expected \(dtypes.map(\.rawValue).joined(separator: " or "))")
            }
            return i
        }
        let qweight = try info("qweight", [.I32]), qzeros = try info("qzeros", [.I32])
        let scales = try info("scales", [.F16, .F32, .BF16]), gIdx = try info("g_idx", [.I32])
        guard qweight.shape.count == 2 else { throw FormatError(file.path, "tensor \(qweight.name) has shape \(qweight.shape), expected 2-D [in * bits / 32, out]") }
        guard gIdx.shape.count == 1 else { throw FormatError(file.path, "tensor \(gIdx.name) has shape \(gIdx.shape), expected 1-D [in]") }
        let rows = qweight.shape[1], cols = gIdx.shape[0]
        guard cols % 32 == 0, rows % 32 == 0 else {
            throw FormatError(file.path, "tensor \(qweight.name): \(rows) output and \(cols) input features must be multiples of 32 for GPTQ packing")
        }
        guard qweight.shape[0] == cols * bits / 32 else {
            throw FormatError(file.path, "tensor \(qweight.name) has shape \(qweight.shape) but \(gIdx.name) \(gIdx.shape) at \(bits) bits implies [\(cols * bits / 32), \(rows)]")
        }
        let groups = QuantizedMatrix.groupCount(cols: cols, groupSize: scheme.groupSize)
        guard scales.shape == [groups, rows] else {
            throw FormatError(file.path, "tensor \(scales.name) has shape \(scales.shape) but \(qweight.name) \(qweight.shape) and \(gIdx.name) \(gIdx.shape) at group size \(scheme.groupSize.map(String.init) ?? "-1") imply [\(groups), \(rows)]")
        }
        guard qzeros.shape == [groups, rows * bits / 32] else {
            throw FormatError(file.path, "tensor \(qzeros.name) has shape \(qzeros.shape) but the layer implies [\(groups), \(rows * bits / 32)]")
        }
        return (rows, cols)
    }

    package func has(_ name: String) -> Bool { layers[name] != nil || stored.has(name) }

    package func shape(_ name: String) -> [Int]? {
        if let l = layers[name] { return [l.rows, l.cols] }
        return stored.shape(name)
    }

    package func storageType(_ name: String) -> String? {
        if layers[name] != nil { return "GPTQ \(scheme)" }
        return stored.storageType(name)
    }

    /// The names that are stored quantized (`P.weight`).
    package var quantizedNames: [String] { names.filter { layers[$0] != nil } }

    /// The integer form of a quantized linear, every buffer checked.
    package func quantizedMatrix(_ name: String) throws -> QuantizedMatrix {
        guard let l = layers[name] else { throw FormatError(path, "\(name) is not a quantized tensor here") }
        let bits = scheme.weightBits!
        let p = l.prefix
        let packed = GPTQPackedMatrix(
            rows: l.rows, cols: l.cols, bits: bits,
            groups: QuantizedMatrix.groupCount(cols: l.cols, groupSize: scheme.groupSize),
            qweight: try l.file.int32s(p + ".qweight"), qzeros: try l.file.int32s(p + ".qzeros"),
            scales: try l.file.tensor(p + ".scales").array, gIdx: try l.file.int32s(p + ".g_idx"))
        do {
            return try GPTQPacking.unpack(packed, groupSize: scheme.groupSize, symmetric: scheme.symmetric,
                                          format: format)
        } catch {
            throw FormatError(l.file.path, "tensors \(p).{qweight,qzeros,scales,g_idx}: \(error)")
        }
    }

    package func tensor(_ name: String) throws -> Tensor {
        if layers[name] != nil { return try quantizedMatrix(name).dequantized() }
        return try stored.tensor(name)
    }
}

/// Named fp32 tensors held in memory as a `WeightSource` (e.g. fake-quantized weights for a
/// Decoder, to compare with a saved checkpoint).
package final class InMemoryWeights: WeightSource {
    package let path: String
    package let tensors: [String: Tensor]
    package var names: [String] { tensors.keys.sorted() }

    package init(_ tensors: [String: Tensor], path: String = "<memory>") {
        self.tensors = tensors
        self.path = path
    }

    package func has(_ name: String) -> Bool { tensors[name] != nil }
    package func tensor(_ name: String) throws -> Tensor {
        guard let t = tensors[name] else { throw FormatError(path, "missing tensor \(name)") }
        return t
    }
    package func shape(_ name: String) -> [Int]? { tensors[name]?.shape }
    package func storageType(_ name: String) -> String? { tensors[name] == nil ? nil : "F32" }
}
