/// The version `offloadfs --version` prints; the one place it is written down.
public enum ProductVersion {
    public static let string = "0.2.0"
}
