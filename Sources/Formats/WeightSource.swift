import Foundation
import Tensors
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Named fp32 weights under Hugging Face checkpoint keys, whatever the file format.
///
/// Keys follow transformers' Llama/Qwen layout: `model.embed_tokens.weight`,
/// `model.layers.N.self_attn.{q,k,v,o}_proj.{weight,bias}`, `model.layers.N.self_attn.{q,k}_norm.weight`,
/// `model.layers.N.{input,post_attention}_layernorm.weight`, `model.layers.N.mlp.{gate,up,down}_proj.weight`,
/// `model.norm.weight`, `lm_head.weight`. Matrices are [out, in].
public protocol WeightSource: AnyObject {
    /// The file or directory the weights come from (for error messages).
    var path: String { get }
    var names: [String] { get }
    func has(_ name: String) -> Bool
    func tensor(_ name: String) throws -> Tensor
    /// The shape without decoding the data; nil when absent.
    func shape(_ name: String) -> [Int]?
}

extension WeightSource {
    /// Fallback for sources that cannot tell a shape without decoding.
    public func shape(_ name: String) -> [Int]? { has(name) ? (try? tensor(name))?.shape : nil }
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
