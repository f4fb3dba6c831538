import Tensors

/// A quantization scheme written the way the field writes it: `w3g128` (3-bit weights in
/// groups of 128 along the input dimension), `w4` (one group per output channel), `w8`,
/// `w2g64`, each `-sym` or `-asym` (default asymmetric, as the paper's W3G128), and activation /
/// KV-cache widths `a4`, `a8`, `kv4`, `kv8` (e.g. `w4a4kv4`). Parts may be joined directly or
/// with dashes: `w4g128-sym`, `w4-a8-kv8`.
package struct QuantScheme: Equatable, Hashable, Codable, Sendable, CustomStringConvertible {
    /// Bits per weight; nil keeps weights in full precision (an activation-only scheme).
    package var weightBits: Int?
    /// Weights per group along a row (the input dimension); nil = one group per output channel.
    package var groupSize: Int?
    package var symmetric: Bool
    package var activationBits: Int?
    package var kvBits: Int?

    package static let supportedWeightBits = [2, 3, 4, 8]
    package static let supportedGroupSizes = [16, 32, 64, 128, 256, 512, 1024]
    package static let supportedActivationBits = [4, 8]

    package init(weightBits: Int?, groupSize: Int? = nil, symmetric: Bool = false,
                activationBits: Int? = nil, kvBits: Int? = nil) {
        self.weightBits = weightBits
        self.groupSize = groupSize
        self.symmetric = symmetric
        self.activationBits = activationBits
        self.kvBits = kvBits
    }

    /// Largest integer code: 2^bits - 1.
    package var maxCode: Int { (1 << (weightBits ?? 32)) - 1 }

    package var description: String {
        var s = ""
        if let b = weightBits { s += "w\(b)" + (groupSize.map { "g\($0)" } ?? "") }
        if let a = activationBits { s += "a\(a)" }
        if let k = kvBits { s += "kv\(k)" }
        if weightBits != nil { s += symmetric ? "-sym" : "-asym" }
        return s
    }

    package static let validForms = "w<bits>[g<group>][a<bits>][kv<bits>][-sym|-asym], e.g. w3g128, w4g128-sym, w4, w8, w2g64, w4a4kv4; weight bits \(supportedWeightBits.map(String.init).joined(separator: "/")), groups \(supportedGroupSizes.map(String.init).joined(separator: "/")), activation and KV bits 4/8"

    /// Parses a scheme; anything else is an error that lists the valid forms.
    package static func parse(_ text: String) throws -> QuantScheme {
        func fail(_ why: String) -> QuantSchemeError {
            QuantSchemeError(message: "invalid quantization scheme \"\(text)\": \(why). Valid: \(validForms)")
        }
        var s = Substring(text.lowercased())
        var scheme = QuantScheme(weightBits: nil)
        var sawSymmetry = false, sawAnything = false

        func number() throws -> Int {
            let digits = s.prefix(while: \.isNumber)
            guard let n = Int(digits) else { throw fail("expected a number after \"\(s.prefix(1))\"") }
            s = s.dropFirst(digits.count)
            return n
        }
        while !s.isEmpty {
            if s.hasPrefix("-") { s = s.dropFirst(); continue }
            if s.hasPrefix("asym") || s.hasPrefix("sym") {
                guard !sawSymmetry else { throw fail("symmetry given twice") }
                sawSymmetry = true
                scheme.symmetric = s.hasPrefix("sym")
                s = s.dropFirst(scheme.symmetric ? 3 : 4)
            } else if s.hasPrefix("kv") {
                s = s.dropFirst(2)
                guard scheme.kvBits == nil else { throw fail("kv bits given twice") }
                scheme.kvBits = try number()
                guard supportedActivationBits.contains(scheme.kvBits!) else { throw fail("KV-cache bits must be 4 or 8") }
            } else if s.hasPrefix("w") {
                s = s.dropFirst()
                guard scheme.weightBits == nil else { throw fail("weight bits given twice") }
                scheme.weightBits = try number()
                guard supportedWeightBits.contains(scheme.weightBits!) else {
                    throw fail("weight bits \(scheme.weightBits!) unsupported")
                }
                if s.hasPrefix("g") {
                    s = s.dropFirst()
                    scheme.groupSize = try number()
                    guard supportedGroupSizes.contains(scheme.groupSize!) else {
                        throw fail("group size \(scheme.groupSize!) unsupported")
                    }
                }
            } else if s.hasPrefix("a") {
                s = s.dropFirst()
                guard scheme.activationBits == nil else { throw fail("activation bits given twice") }
                scheme.activationBits = try number()
                guard supportedActivationBits.contains(scheme.activationBits!) else { throw fail("activation bits must be 4 or 8") }
            } else {
                throw fail("unexpected \"\(s)\"")
            }
            sawAnything = true
        }
        guard sawAnything, scheme.weightBits != nil || scheme.activationBits != nil || scheme.kvBits != nil else {
            throw fail("empty")
        }
        if sawSymmetry && scheme.weightBits == nil { throw fail("-sym/-asym applies to weights, and no weight bits were given") }
        return scheme
    }
}

package struct QuantSchemeError: UserFacingError, Equatable {
    package let message: String
    package var description: String { message }
}
