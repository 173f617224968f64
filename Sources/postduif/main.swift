print("postduif")
