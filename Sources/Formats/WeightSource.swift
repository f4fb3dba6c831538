import Foundation
import Tensors
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Named fp32 weights under Hugging Face checkpoint keys, whatever the file format.
///
/// Keys are transformers' Llama/Qwen names, as `DecoderArchitecture` spells them. Matrices are [out, in].
package protocol WeightSource {
    /// The file or directory the weights come from (for error messages).
    var path: String { get }
    var names: [String] { get }
    func has(_ name: String) -> Bool
    func tensor(_ name: String) throws -> Tensor
    /// The shape without decoding the data; nil when absent.
    func shape(_ name: String) -> [Int]?
    /// How the tensor is stored on disk ("F32", "BF16", "Q4_1", ...); nil when absent.
    func storageType(_ name: String) -> String?
}

extension WeightSource {
    /// The tensor, checked against the shape the config implies (FormatError naming both).
    package func tensor(_ name: String, expecting shape: [Int]) throws -> Tensor {
        guard has(name) else {
            throw FormatError(path, "missing tensor \(name) (expected shape \(shape))")
        }
        let t = try tensor(name)
        guard t.shape == shape else {
            throw FormatError(path, "tensor \(name) has shape \(t.shape), the config needs \(shape)")
        }
        return t
    }

    /// Fallback for sources that cannot tell a shape without decoding.
    package func shape(_ name: String) -> [Int]? { has(name) ? (try? tensor(name))?.shape : nil }
}

/// A read-only memory mapping of a whole file, unmapped when the last reference goes.
/// Pages load lazily, so opening a multi-gigabyte checkpoint costs nothing until tensors are read.
final class MappedFile: @unchecked Sendable {
    let base: UnsafeRawPointer
    let size: Int

    init(url: URL) throws {
        let path = url.path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw FormatError(path, "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FormatError(path, "cannot stat: \(String(cString: strerror(errno)))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw FormatError(path, "not a regular file") }
        size = Int(st.st_size)
        guard size > 0 else { throw FormatError(path, "the file is empty; re-download it") }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw FormatError(path, "cannot memory-map: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(p)
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), size) }
}

/// A Hugging Face checkpoint directory: `model.safetensors`, or shards listed by
/// `model.safetensors.index.json`, or (failing both) every `*.safetensors` file in it.
package final class SafeTensorsWeights: WeightSource {
    package let path: String
    /// Names in shard order, then data order within each shard.
    package let names: [String]
    package let files: [SafeTensorsFile]
    private let owner: [String: SafeTensorsFile]

    package init(directory: URL) throws {
        path = directory.path
        let fm = FileManager.default
        let index = directory.appendingPathComponent("model.safetensors.index.json")
        let single = directory.appendingPathComponent("model.safetensors")
        var expected: [String: String]? = nil
        var shardNames: [String]
        if fm.fileExists(atPath: index.path) {
            guard let data = try? Data(contentsOf: index),
                  let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
                  let map = object["weight_map"] as? [String: String] else {
                throw FormatError(index.path, "not a safetensors index (needs a \"weight_map\" object of name → file)")
            }
            expected = map
            shardNames = Array(Set(map.values)).sorted()
        } else if fm.fileExists(atPath: single.path) {
            shardNames = [single.lastPathComponent]
        } else {
            shardNames = ((try? fm.contentsOfDirectory(atPath: directory.path)) ?? [])
                .filter { $0.hasSuffix(".safetensors") }.sorted()
        }
        guard !shardNames.isEmpty else {
            throw FormatError(path, "no model.safetensors (or index and shards) in this directory")
        }

        files = try shardNames.map { name in
            // An index naming files outside the directory would be a way to read arbitrary files.
            guard !name.contains("/") else { throw FormatError(index.path, "shard name \(name) must be a plain file name") }
            return try SafeTensorsFile(url: directory.appendingPathComponent(name))
        }
        var owner: [String: SafeTensorsFile] = [:]
        var names: [String] = []
        for file in files {
            for name in file.tensorNames {
                if let other = owner[name] {
                    throw FormatError(path, "tensor \(name) is in both \(other.path) and \(file.path)")
                }
                owner[name] = file
                names.append(name)
            }
        }
        for (name, shard) in expected ?? [:] where owner[name] == nil {
            throw FormatError(directory.appendingPathComponent(shard).path,
                              "missing tensor \(name), which model.safetensors.index.json says is here; re-download it")
        }
        self.owner = owner
        self.names = names
    }

    package func has(_ name: String) -> Bool { owner[name] != nil }

    package func tensor(_ name: String) throws -> Tensor {
        guard let file = owner[name] else { throw FormatError(path, "missing tensor \(name)") }
        return try file.tensor(name)
    }

    package func shape(_ name: String) -> [Int]? { try? owner[name]?.info(name).shape }

    package func storageType(_ name: String) -> String? { (try? owner[name]?.info(name).dtype).map { "\($0)" } }
}

/// A GGUF file's weights under Hugging Face names, decoded to fp32 and — for Llama — with
/// llama.cpp's reordering of the q/k rows undone, so every tensor equals the transformers one.
/// Qwen2 biases and Qwen3 q/k norms come through the same name map as every other tensor.
package final class GGUFWeights: WeightSource {
    package let file: GGUFFile
    package var path: String { file.path }
    /// Hugging Face names of the GGUF tensors that have one (others, e.g. rope_freqs, are left out).
    package let names: [String]
    private let ggufNames: [String: String]
    /// Head count to un-permute by, for the tensors llama.cpp permuted.
    private let permutedHeads: [String: Int]

    /// The Hugging Face name of a llama.cpp tensor name ("blk.3.attn_q.weight" →
    /// "model.layers.3.self_attn.q_proj.weight"), nil when there is none.
    package static func hfName(forGGUF name: String) -> String? { DecoderArchitecture.name(forGGUF: name) }

    package init(_ file: GGUFFile) throws {
        self.file = file
        let arch = file.string("general.architecture") ?? ""
        let family = ModelConfig.Family(rawValue: arch)
        let heads = file.int("\(arch).attention.head_count")
        let kvHeads = file.int("\(arch).attention.head_count_kv") ?? heads

        var ggufNames: [String: String] = [:]
        var permutedHeads: [String: Int] = [:]
        var names: [String] = []
        for name in file.tensorNames {
            guard let hf = Self.hfName(forGGUF: name) else { continue }
            ggufNames[hf] = name
            names.append(hf)
            guard let family, let role = DecoderArchitecture.role(ofName: hf)?.role,
                  DecoderArchitecture.isRoPEPermuted(role, family: family) else { continue }
            guard let n = DecoderArchitecture.usesKeyHeads(role) ? kvHeads : heads else {
                throw FormatError(file.path, "missing metadata \(arch).attention.head_count, needed to read \(name)")
            }
            let rows = try file.info(name).shape.first ?? 0
            guard n > 0, rows % (2 * n) == 0 else {
                throw FormatError(file.path, "tensor \(name) has \(rows) rows, which do not split into \(n) heads of even width")
            }
            permutedHeads[hf] = n
        }
        self.ggufNames = ggufNames
        self.permutedHeads = permutedHeads
        self.names = names
    }

    package func has(_ name: String) -> Bool { ggufNames[name] != nil }

    package func shape(_ name: String) -> [Int]? { ggufNames[name].flatMap { file.tensors[$0]?.shape } }

    package func storageType(_ name: String) -> String? { ggufNames[name].flatMap { file.tensors[$0]?.type.name } }

    package func tensor(_ name: String) throws -> Tensor {
        guard let gguf = ggufNames[name] else { throw FormatError(path, "missing tensor \(name)") }
        let t = try file.tensor(gguf)
        guard let heads = permutedHeads[name] else { return t }
        return LlamaRowPermutation.unpermute(t, heads: heads)
    }

    /// A matrix's blocks as the file stores them (still quantized), rows in Hugging Face order.
    package func packed(_ name: String) throws -> GGUFPackedMatrix {
        guard let gguf = ggufNames[name] else { throw FormatError(path, "missing tensor \(name)") }
        let info = try file.info(gguf)
        guard info.shape.count == 2, GGUFQuant.canDequantize(info.type) else {
            throw FormatError(path, "tensor \(name) (\(info.type.name), shape \(info.shape)) is not a matrix of a type rqat decodes")
        }
        let rows = info.shape[0], heads = permutedHeads[name]
        let bytes = try file.withRawBytes(gguf) { raw -> [UInt8] in
            let rowBytes = raw.count / max(rows, 1)
            var out = [UInt8](repeating: 0, count: raw.count)
            out.withUnsafeMutableBytes { dst in
                for row in 0..<rows {
                    let from = heads.map { LlamaRowPermutation.ggufRow(ofRow: row, rows: rows, heads: $0) } ?? row
                    dst.baseAddress!.advanced(by: row * rowBytes)
                        .copyMemory(from: raw.baseAddress!.advanced(by: from * rowBytes), byteCount: rowBytes)
                }
            }
            return out
        }
        return GGUFPackedMatrix(type: info.type, shape: info.shape, bytes: bytes)
    }
}

/// A GGUF matrix kept in its quantized blocks: what a packed kernel (a `LinearWeight` case)
/// multiplies by without dequantizing. Blocks never straddle rows, so each row is `bytesPerRow`
/// bytes of whole blocks, and reordering rows (llama.cpp's q/k order) moves whole blocks.
package struct GGUFPackedMatrix: Sendable {
    package let type: GGMLType
    /// [rows, cols], as the dequantized tensor's.
    package let shape: [Int]
    package let bytes: [UInt8]

    package var bytesPerRow: Int { bytes.count / max(shape[0], 1) }

    /// The fp32 matrix, as `GGUFWeights.tensor` gives it.
    package func dequantized() -> Tensor {
        let t = Tensor(shape: shape)
        guard t.count > 0 else { return t }
        bytes.withUnsafeBytes { GGUFQuant.dequantize(type, from: $0.baseAddress!, to: t.ptr, count: t.count) }
        return t
    }
}

/// llama.cpp's reordering of Llama's q and k projection rows, and its inverse.
///
/// Hugging Face's RoPE rotates the pairs (x[i], x[i + d/2]) of each head; llama.cpp's rotates
/// adjacent pairs (x[2i], x[2i + 1]). Its converter therefore moves, within each head of d rows,
/// row s·d/2 + i to row 2i + s (s ∈ {0, 1}) — in numpy,
/// `w.reshape(heads, 2, d/2, in).swapaxes(1, 2).reshape(out, in)`. Biases are reordered the same
/// way (rows of width 1). Undoing it gives back the transformers tensor.
package enum LlamaRowPermutation {
    /// Hugging Face order → llama.cpp order.
    package static func permute(_ t: Tensor, heads: Int) -> Tensor { reorder(t, heads: heads, toGGUF: true) }

    /// llama.cpp order → Hugging Face order.
    package static func unpermute(_ t: Tensor, heads: Int) -> Tensor { reorder(t, heads: heads, toGGUF: false) }

    /// Where llama.cpp stores Hugging Face row `row` of a tensor of `rows` rows and `heads` heads.
    package static func ggufRow(ofRow row: Int, rows: Int, heads: Int) -> Int {
        precondition(heads > 0 && rows % (2 * heads) == 0, "\(rows) rows do not split into \(heads) heads of even width")
        let headDim = rows / heads, half = headDim / 2
        let within = row % headDim
        return row - within + 2 * (within % half) + within / half
    }

    private static func reorder(_ t: Tensor, heads: Int, toGGUF: Bool) -> Tensor {
        let rows = t.shape.first ?? 1
        let width = rows == 0 ? 0 : t.count / rows
        let out = Tensor(shape: t.shape)
        for hfRow in 0..<rows {
            let ggufRow = ggufRow(ofRow: hfRow, rows: rows, heads: heads)
            let (from, to) = toGGUF ? (hfRow, ggufRow) : (ggufRow, hfRow)
            (out.ptr + to * width).update(from: t.ptr + from * width, count: width)
        }
        return out
    }
}
