import Tensors

/// An input file that cannot be used. The message is one line naming the file, the problem
/// and, where there is one, the fix; the CLI prints it as is and exits non-zero.
public struct FormatError: UserFacingError, Equatable {
    public let path: String
    public let problem: String

    public init(_ path: String, _ problem: String) {
        self.path = path
        self.problem = problem
    }

    public var description: String { "\(path): \(problem)" }
}
