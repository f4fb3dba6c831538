/// GPT-2's reversible map between bytes and printable Unicode scalars.
///
/// Byte-level BPE vocabularies store tokens as text, yet a token may hold any byte, including
/// control bytes and half of a multi-byte character. GPT-2 therefore spells each byte as one
/// visible scalar: bytes that are already printable Latin-1 stand for themselves, and the other
/// 68 (controls, space, DEL, NBSP, soft hyphen) are moved, in byte order, to U+0100 and up. So a
/// space is "Ġ" (U+0120) and a newline "Ċ" (U+010A) in every GPT-2 style vocabulary.
enum ByteLevel {
    /// `scalars[b]` spells byte `b`.
    static let scalars: [Unicode.Scalar] = {
        func printable(_ b: Int) -> Bool { (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b) }
        var next = 256
        return (0..<256).map { b in
            if printable(b) { return Unicode.Scalar(UInt8(b)) }
            defer { next += 1 }
            return Unicode.Scalar(UInt32(next))!
        }
    }()

    /// The inverse of `scalars`, indexed by scalar value (every spelling is below U+0144).
    private static let bytesByScalar: [UInt8?] = {
        var table = [UInt8?](repeating: nil, count: 0x144)
        for (b, s) in scalars.enumerated() { table[Int(s.value)] = UInt8(b) }
        return table
    }()

    /// The byte-level spelling of some bytes, as the vocabulary stores it.
    static func spell<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(scalars[Int(b)]) }
        return String(s)
    }

    /// The bytes a vocabulary token stands for, as Hugging Face's ByteLevel decoder finds them:
    /// a token with any scalar outside the map (an added token such as "<|im_end|> x" written
    /// with a real space) is taken as its own UTF-8 text instead.
    static func bytes(of token: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(token.unicodeScalars.count)
        for s in token.unicodeScalars {
            guard Int(s.value) < bytesByScalar.count, let b = bytesByScalar[Int(s.value)] else {
                return Array(token.utf8)
            }
            out.append(b)
        }
        return out
    }
}
